"""Each version's `flywheel.json` (preprocess name, labels, input and output tensor names).

The gateway reads it from the model repository folder in its settings (the same folder the
model server serves; the model server's ModelMetadata does not carry it). Cached per version
and re-read when the file changes (checked at most once a second).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from services.gateway.errors import ModelNotFound

PREPROCESSORS = ("digits_8x8",)
RECHECK_S = 1.0  # a cached card is re-checked (stat) at most this often


@dataclass(frozen=True)
class ModelCard:
    model: str
    version: str
    preprocess: str
    labels: tuple[str, ...]
    input: str
    output: str


class ModelCards:
    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._cache: dict[tuple[str, str], tuple[float, float, ModelCard]] = {}
        self._lock = threading.Lock()

    def latest_version(self, model: str) -> str:
        folder = self.repository / model
        versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()] if folder.is_dir() else []
        if not versions:
            raise ModelNotFound(f"model {model!r} has no versions in the repository")
        return str(max(versions))

    def get(self, model: str, version: str) -> ModelCard:
        if "/" in model or model.startswith(".") or not version.isdigit():
            raise ModelNotFound(f"no model {model!r} version {version!r}")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((model, version))
        if hit is not None and now - hit[0] < RECHECK_S:
            return hit[2]
        path = self.repository / model / version / "flywheel.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            raise ModelNotFound(f"model {model!r} version {version} has no flywheel.json in the repository") from None
        if hit is not None and hit[1] == mtime:
            with self._lock:
                self._cache[(model, version)] = (now, mtime, hit[2])
            return hit[2]
        try:
            doc = json.loads(path.read_text())
            card = ModelCard(
                model=model,
                version=version,
                preprocess=str(doc["preprocess"]),
                labels=tuple(str(x) for x in doc["labels"]),
                input=str(doc.get("input", "features")),
                output=str(doc.get("output", "probabilities")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotFound(f"flywheel.json of {model!r} v{version} is unusable: {exc}") from None
        with self._lock:
            self._cache[(model, version)] = (now, mtime, card)
        return card

    def labels(self, model: str, version: str) -> tuple[str, ...]:
        """Labels for logging, or () when the version has no usable card."""
        try:
            return self.get(model, version).labels
        except ModelNotFound:
            return ()

"""Each version's `flywheel.json`: its project's input spec, labels, input and output tensor names.

The gateway reads it from the model repository folder in its settings (the same folder the
model server serves; the model server's ModelMetadata does not carry it). Cached per version
and re-read when the file changes (checked at most once a second). The input spec is what the
trainer trained with, so `:predict` encodes native inputs for that version exactly as its
training data was encoded (services/preprocessing).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from services.gateway.errors import ModelNotFound
from services.preprocessing import InputCodec
from services.projects.spec import InputSpec

RECHECK_S = 1.0  # a cached card is re-checked (stat) at most this often
INPUT_SPEC: TypeAdapter = TypeAdapter(InputSpec)


@dataclass(frozen=True)
class ModelCard:
    model: str
    version: str
    preprocess: str
    labels: tuple[str, ...]
    input: str
    output: str
    project: str = ""
    codec: InputCodec | None = None  # None: the version carries no input spec (OIP v2 only)


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
            spec = doc.get("input_spec")
            card = ModelCard(
                model=model,
                version=version,
                preprocess=str(doc["preprocess"]),
                labels=tuple(str(x) for x in doc["labels"]),
                input=str(doc.get("input", "features")),
                output=str(doc.get("output", "probabilities")),
                project=str(doc.get("project", "")),
                codec=InputCodec(INPUT_SPEC.validate_python(spec)) if spec is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
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

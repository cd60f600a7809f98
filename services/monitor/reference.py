"""Reference profiles per snapshot, and which snapshot each model version was trained on.

The profile is `<lake_root>/snapshots/<snapshot_id>/profile.json` (docs/CONTRACTS.md). The
version → snapshot map comes from `ModelPublished` events and, as a fallback, from the model
repository's `<model>/<version>/flywheel.json`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.monitor.errors import ReferenceUnavailable
from services.monitor.statistics import ColumnReference
from services.preprocessing.codec import FeatureSchema
from services.profiles import default_schema, load_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """One snapshot's profile, ready for testing: raw and derived columns, class priors."""

    snapshot_id: str
    n: int
    raw: tuple[ColumnReference, ...]
    derived: tuple[ColumnReference, ...]
    class_priors: dict[str, float]
    # What the columns are (names, categorical, nullable, image shape): derived columns are computed
    # from raw ones under it (services/profiles.derived_columns), as the lake did.
    schema: FeatureSchema | None = None

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> Reference:
        try:
            raw = tuple(ColumnReference.from_profile(n, profile["features"][n]) for n in profile["feature_names"])
            dcols = profile.get("derived") or {}
            derived = tuple(ColumnReference.from_profile(n, c) for n, c in dcols.items())
            priors = {str(k): float(v) for k, v in (profile.get("class_priors") or {}).items()}
            schema = FeatureSchema.from_dict(profile["schema"]) if profile.get("schema") else default_schema(len(raw))
            return cls(str(profile["snapshot_id"]), int(profile["n"]), raw, derived, priors, schema)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceUnavailable(f"profile is not a Flywheel reference profile: {exc!r}") from exc

    @property
    def feature_dim(self) -> int:
        return len(self.raw)


def profile_url(lake_root: str, snapshot_id: str) -> str:
    return f"{lake_root.rstrip('/')}/snapshots/{snapshot_id}/profile.json"


class ReferenceStore:
    """Loads and caches references; a failed load is retried after `retry_s`, never fatal."""

    def __init__(
        self,
        lake_root: str,
        loader: Callable[[str], dict[str, Any]] = load_profile,
        retry_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lake_root = lake_root
        self._loader = loader
        self._retry_s = retry_s
        self._clock = clock
        self._cache: dict[str, Reference] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, snapshot_id: str) -> Reference | None:
        with self._lock:
            if snapshot_id in self._cache:
                return self._cache[snapshot_id]
            failed = self._failed.get(snapshot_id)
            if failed is not None and self._clock() - failed[0] < self._retry_s:
                return None
        url = profile_url(self.lake_root, snapshot_id)
        try:
            ref = Reference.from_profile(self._loader(url))
        except (OSError, ValueError, ReferenceUnavailable) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._failed[snapshot_id] = (self._clock(), reason)
            log.warning(
                "reference profile unavailable", extra={"snapshot_id": snapshot_id, "url": url, "error": reason}
            )
            return None
        with self._lock:
            self._cache[snapshot_id] = ref
            self._failed.pop(snapshot_id, None)
        log.info("reference profile loaded", extra={"snapshot_id": snapshot_id, "n": ref.n})
        return ref

    def last_error(self, snapshot_id: str) -> str | None:
        with self._lock:
            failed = self._failed.get(snapshot_id)
        return failed[1] if failed else None


class SnapshotMap:
    """model, version → snapshot_id, from ModelPublished events and the model repository."""

    def __init__(
        self, model_repository: str = "", retry_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._map: dict[tuple[str, str], str] = {}
        self._repo = Path(model_repository) if model_repository else None
        self._misses: dict[tuple[str, str], float] = {}
        self._retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()

    def published(self, model: str, version: str, snapshot_id: str) -> None:
        if not snapshot_id:
            return
        with self._lock:
            self._map[(model, version)] = snapshot_id

    def snapshot_of(self, model: str, version: str) -> str | None:
        with self._lock:
            found = self._map.get((model, version))
        if found is not None or self._repo is None:
            return found
        missed = self._misses.get((model, version))
        if missed is not None and self._clock() - missed < self._retry_s:
            return None  # looked a moment ago: do not read the repository for every prediction
        meta = self._repo / model / version / "flywheel.json"
        try:
            snapshot_id = str(json.loads(meta.read_text()).get("snapshot_id") or "")
        except (OSError, ValueError):
            snapshot_id = ""
        if snapshot_id:
            self.published(model, version, snapshot_id)
            return snapshot_id
        self._misses[(model, version)] = self._clock()
        return None

"""Build and read the reference profile stored with every snapshot (`profile.json`).

A profile describes a training split's features per column, as the project's `FeatureSchema`
names them (services/preprocessing): numeric columns keep a histogram, quantiles and a sample
for two-sample tests; categorical columns (and numeric ones with few distinct values, like the
grey levels of a digit pixel) keep their levels and counts, which the monitor tests per level.

Derived columns are computed from the raw ones, here and in the monitor, by `derived_columns`:

* image projects whose features are the pixels: image statistics that move under real shifts
  while single pixels barely do (mean intensity, ink share, high-frequency energy, centre of mass,
  quadrant means; services/preprocessing/image_stats.py);
* nullable columns: a 0/1 "is null" column each, so more (or fewer) missing values is a drift.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np

from services.preprocessing.codec import FeatureSchema
from services.preprocessing.image_stats import DERIVED_FEATURES, derived_features

QUANTILES = [i / 10 for i in range(11)]
HIST_BINS = 20
# A column with at most this many distinct values keeps its levels and their counts: the monitor
# tests such a column per level (chi-square), since ties make Kolmogorov-Smirnov invalid.
MAX_LEVELS = 32
NULL_SUFFIX = ":null"


def derived_columns(features: np.ndarray, schema: FeatureSchema) -> tuple[list[str], np.ndarray]:
    """(names, (n, k) values) of the columns derived from raw features under `schema`."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    names: list[str] = []
    parts: list[np.ndarray] = []
    if schema.image_shape is not None and x.shape[1] == int(np.prod(schema.image_shape)):
        names += list(DERIVED_FEATURES)
        parts.append(derived_features(x, schema.image_shape))
    for i, (name, nullable) in enumerate(zip(schema.names, schema.nullable, strict=True)):
        if nullable and i < x.shape[1]:
            names.append(name + NULL_SUFFIX)
            parts.append(np.isnan(x[:, i : i + 1]).astype(np.float64))
    if not parts:
        return [], np.zeros((len(x), 0))
    return names, np.concatenate(parts, axis=1)


def _column_profile(values: np.ndarray, categorical: bool = False) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    nulls = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    if len(values) == 0:
        values = np.zeros(1)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    levels, level_counts = np.unique(values, return_counts=True)
    discrete = categorical or len(levels) <= MAX_LEVELS
    return {
        "kind": "categorical" if categorical else "numeric",
        "levels": [float(v) for v in levels] if discrete else None,
        "level_counts": [int(c) for c in level_counts] if discrete else None,
        "nulls": nulls,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": [float(q) for q in np.quantile(values, QUANTILES)],
        "hist_edges": [float(e) for e in edges],
        "hist_counts": [int(c) for c in counts],
        # A sample kept for two-sample tests (KS) against live windows; small and deterministic.
        "sample": [float(v) for v in np.sort(values)[:: max(1, len(values) // 500)]],
    }


def default_schema(dim: int) -> FeatureSchema:
    """Numeric columns f0… without derived ones (features whose meaning the caller does not give);
    64 columns are taken as an 8×8 grey image, as profiles were before projects named their columns."""
    names = tuple(f"f{i}" for i in range(dim))
    return FeatureSchema(names, (False,) * dim, (False,) * dim, (1, 8, 8) if dim == 64 else None)


def build_profile(
    snapshot_id: str, features: np.ndarray, labels: Sequence[str], schema: FeatureSchema | None = None
) -> dict[str, Any]:
    """The reference profile of a training split: per-column and derived statistics, class priors."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got shape {feats.shape}")
    schema = schema or default_schema(feats.shape[1])
    if len(schema.names) != feats.shape[1]:
        raise ValueError(f"the schema names {len(schema.names)} columns; the features have {feats.shape[1]}")
    derived_names, derived = derived_columns(feats, schema)
    profile: dict[str, Any] = {
        "snapshot_id": snapshot_id,
        "n": len(feats),
        "schema": schema.as_dict(),
        "feature_names": list(schema.names),
        "features": {
            name: _column_profile(feats[:, i], categorical)
            for i, (name, categorical) in enumerate(zip(schema.names, schema.categorical, strict=True))
        },
        "class_priors": {},
        "derived": {
            name: _column_profile(derived[:, i], name.endswith(NULL_SUFFIX)) for i, name in enumerate(derived_names)
        },
    }
    counts = Counter(str(label) for label in labels)
    total = sum(counts.values())
    profile["class_priors"] = {label: c / total for label, c in sorted(counts.items())}
    return profile


def load_profile(url: str) -> dict[str, Any]:
    """Read a profile.json from any fsspec URL (a snapshot folder's `profile.json`)."""
    with fsspec.open(url, "r") as fh:
        return json.load(fh)

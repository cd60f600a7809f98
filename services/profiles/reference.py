"""Build and read the reference profile stored with every snapshot (`profile.json`).

Raw pixels of an 8×8 digit move little under many real shifts, so the profile also keeps
*derived* image statistics that do move: mean intensity (inversion, brightness), ink fraction,
high-frequency energy (noise), the centre-of-mass row and column and quadrant means (rotation,
translation). The monitor computes the same derived features on live inputs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np

QUANTILES = [i / 10 for i in range(11)]
HIST_BINS = 20
# A column with at most this many distinct values keeps its levels and their counts: the monitor
# tests such a column per level (chi-square), since ties make Kolmogorov-Smirnov invalid.
MAX_LEVELS = 32
DERIVED_FEATURES: tuple[str, ...] = (
    "mean_intensity",
    "ink_fraction",
    "hf_energy",
    "com_row",
    "com_col",
    "q_top_left",
    "q_top_right",
    "q_bottom_left",
    "q_bottom_right",
)


def derived_features(features: np.ndarray) -> np.ndarray:
    """(n, 64) canonical digit features → (n, len(DERIVED_FEATURES)) image statistics."""
    x = np.asarray(features, dtype=np.float64).reshape(-1, 8, 8)
    n = x.shape[0]
    mean = x.mean(axis=(1, 2))
    ink = (x > 0.5).mean(axis=(1, 2))
    hf = (np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))) / 2
    total = x.sum(axis=(1, 2)) + 1e-9
    idx = np.arange(8, dtype=np.float64)
    com_row = (x.sum(axis=2) * idx).sum(axis=1) / total
    com_col = (x.sum(axis=1) * idx).sum(axis=1) / total
    quads = [x[:, :4, :4], x[:, :4, 4:], x[:, 4:, :4], x[:, 4:, 4:]]
    cols = [mean, ink, hf, com_row, com_col, *[q.mean(axis=(1, 2)) for q in quads]]
    return np.stack(cols, axis=1).reshape(n, len(DERIVED_FEATURES))


def _column_profile(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    levels, level_counts = np.unique(values, return_counts=True)
    discrete = len(levels) <= MAX_LEVELS
    return {
        "levels": [float(v) for v in levels] if discrete else None,
        "level_counts": [int(c) for c in level_counts] if discrete else None,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": [float(q) for q in np.quantile(values, QUANTILES)],
        "hist_edges": [float(e) for e in edges],
        "hist_counts": [int(c) for c in counts],
        # A sample kept for two-sample tests (KS) against live windows; small and deterministic.
        "sample": [float(v) for v in np.sort(values)[:: max(1, len(values) // 500)]],
    }


def build_profile(snapshot_id: str, features: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The reference profile of a training split: per-feature and derived statistics, class priors."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got shape {feats.shape}")
    names = [f"f{i}" for i in range(feats.shape[1])]
    profile: dict[str, Any] = {
        "snapshot_id": snapshot_id,
        "n": len(feats),
        "feature_names": names,
        "features": {name: _column_profile(feats[:, i]) for i, name in enumerate(names)},
        "class_priors": {},
        "derived": {},
    }
    if feats.shape[1] == 64:
        derived = derived_features(feats)
        profile["derived"] = {name: _column_profile(derived[:, i]) for i, name in enumerate(DERIVED_FEATURES)}
    counts = Counter(str(label) for label in labels)
    total = sum(counts.values())
    profile["class_priors"] = {label: c / total for label, c in sorted(counts.items())}
    return profile


def load_profile(url: str) -> dict[str, Any]:
    """Read a profile.json from any fsspec URL (a snapshot folder's `profile.json`)."""
    with fsspec.open(url, "r") as fh:
        return json.load(fh)

"""Test one window of live predictions against a reference: the per-feature results and the verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.monitor.reference import Reference
from services.monitor.statistics import (
    ColumnReference,
    TestResult,
    chi2_classes,
    ecdf_distances,
    ks_p_value,
    psi,
    reject,
    scaled_wasserstein,
)
from services.profiles import derived_features


@dataclass(frozen=True)
class DriftConfig:
    features: str = "all"  # "all", "derived" or "raw"
    alpha: float = 0.005
    correction: str = "bh"
    min_samples: int = 100
    min_drifted_share: float = 0.0


@dataclass(frozen=True)
class WindowVerdict:
    samples: int
    results: tuple[TestResult, ...]  # decision tests (ks, chi2) with their drifted flags, then effect sizes
    tested: int  # how many decision tests
    drifted_share: float
    drifted: bool

    def decisions(self) -> list[TestResult]:
        return [r for r in self.results if r.test in ("ks", "chi2")]


def evaluate_window(
    reference: Reference, features: np.ndarray, predicted: Sequence[str], config: DriftConfig
) -> WindowVerdict | None:
    """None when the window is smaller than the minimum sample size."""
    n = len(features)
    if n < config.min_samples:
        return None
    columns: list[tuple[np.ndarray, ColumnReference]] = []
    if config.features in ("all", "raw"):
        columns += [(features[:, i], col) for i, col in enumerate(reference.raw)]
    if config.features in ("all", "derived") and reference.derived:
        derived = derived_features(features)
        columns += [(derived[:, i], col) for i, col in enumerate(reference.derived)]
    effects: list[TestResult] = []
    ks_stats: list[float] = []
    for values, col in columns:
        ks, emd = ecdf_distances(values, col)
        ks_stats.append(ks)
        effects.append(TestResult(col.name, "psi", psi(values, col)))
        effects.append(TestResult(col.name, "wasserstein", scaled_wasserstein(emd, col)))
    ks_p = ks_p_value(np.array(ks_stats), n, np.array([len(col.sample) for _, col in columns]))
    decisions = [(col.name, "ks", d, float(p)) for (_, col), d, p in zip(columns, ks_stats, ks_p, strict=True)]
    if reference.class_priors and predicted:
        stat, p = chi2_classes(predicted, reference.class_priors)
        decisions.append(("predicted_class", "chi2", stat, p))
    rejected = reject([d[3] for d in decisions], config.alpha, config.correction)
    results = [TestResult(f, t, s, p, bool(r)) for (f, t, s, p), r in zip(decisions, rejected, strict=True)]
    share = float(rejected.mean()) if len(rejected) else 0.0
    drifted = bool(rejected.any()) and share > config.min_drifted_share
    return WindowVerdict(n, tuple(results + effects), len(decisions), share, drifted)

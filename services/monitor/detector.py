"""Test one window of live predictions against a reference: the per-feature results and the verdict.

A feature drifts when its change is both **significant** (its test rejects after the window's
multiple-testing correction) and **large enough to matter** (its PSI, less what sampling noise
alone gives a window of that size, is at least `min_effect`).
Significance alone is not enough: over thousands of predictions every negligible difference
becomes significant. An effect floor alone is not enough either: on a small window PSI is noisy.
Repeated inputs are tested once (`dedupe`): resending one image a thousand times says nothing new
about the input distribution, and counting it a thousand times makes every p-value a lie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.monitor.reference import Reference
from services.monitor.statistics import (
    ColumnReference,
    TestResult,
    binned_psi,
    chi2_classes,
    ecdf_distances,
    ks_p_value,
    level_test,
    reject,
    scaled_wasserstein,
)
from services.profiles import derived_features

DECISION_TESTS = ("ks", "chi2")


@dataclass(frozen=True)
class DriftConfig:
    features: str = "auto"  # "auto", "all", "derived" or "raw" (see `tested_columns`)
    alpha: float = 0.005
    correction: str = "bh"
    min_samples: int = 100
    min_drifted_share: float = 0.0
    min_effect: float = 0.3  # excess PSI a significant change needs to count as drift
    dedupe: bool = True


@dataclass(frozen=True)
class WindowVerdict:
    samples: int  # distinct inputs tested
    results: tuple[TestResult, ...]  # decision tests (ks, chi2) with their drifted flags, then effect sizes
    tested: int  # how many decision tests
    drifted_share: float
    drifted: bool
    duplicates: int = 0  # repeated inputs left out of the tests

    def decisions(self) -> list[TestResult]:
        return [r for r in self.results if r.test in DECISION_TESTS]


def distinct_rows(features: np.ndarray, predicted: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The window's inputs with repeats removed (first occurrence kept, order kept)."""
    if len(features) == 0:
        return features, list(predicted)
    _, first = np.unique(np.ascontiguousarray(features), axis=0, return_index=True)
    keep = np.sort(first)
    return features[keep], [predicted[i] for i in keep] if len(predicted) == len(features) else list(predicted)


def tested_columns(reference: Reference, features: np.ndarray, which: str) -> list[tuple[np.ndarray, ColumnReference]]:
    """The live columns to test, each with its reference.

    "auto" (the default) tests the derived image statistics when the profile has them (images)
    and every raw feature otherwise (tables). On images, single pixels are the wrong unit: the
    digits of three or four writers differ from the rest in a few edge pixels enough to flag a
    window in 1–5 % of windows, while a new camera moves the image statistics (intensity, ink,
    high-frequency energy, centre of mass, quadrants) by far more (see the README's numbers).
    """
    if which == "auto":
        which = "derived" if reference.derived else "raw"
    columns: list[tuple[np.ndarray, ColumnReference]] = []
    if which in ("all", "raw"):
        columns += [(features[:, i], col) for i, col in enumerate(reference.raw)]
    if which in ("all", "derived") and reference.derived:
        derived = derived_features(features)
        columns += [(derived[:, i], col) for i, col in enumerate(reference.derived)]
    return columns


def evaluate_window(
    reference: Reference, features: np.ndarray, predicted: Sequence[str], config: DriftConfig
) -> WindowVerdict | None:
    """None when the window has fewer distinct inputs than the minimum sample size."""
    inputs = len(features)
    if config.dedupe:
        features, predicted = distinct_rows(features, predicted)
    n = len(features)
    if n < config.min_samples:
        return None
    columns = tested_columns(reference, features, config.features)
    effects: list[TestResult] = []
    decisions: list[tuple[str, str, float, float, float]] = []  # feature, test, statistic, p, effect
    continuous: list[tuple[str, float, float, int]] = []  # feature, ks, psi, reference sample size
    for values, col in columns:
        ks, emd = ecdf_distances(values, col)
        effects.append(TestResult(col.name, "wasserstein", scaled_wasserstein(emd, col)))
        if col.discrete:
            statistic, p, value, excess = level_test(values, col)
            decisions.append((col.name, "chi2", statistic, p, excess))
        else:
            value, excess = binned_psi(values, col)
            continuous.append((col.name, ks, excess, len(col.sample)))
        effects.append(TestResult(col.name, "psi", value))
    if continuous:
        p_values = ks_p_value(np.array([c[1] for c in continuous]), n, np.array([c[3] for c in continuous]))
        decisions += [(name, "ks", d, float(p), e) for (name, d, e, _), p in zip(continuous, p_values, strict=True)]
    if reference.class_priors and predicted:
        statistic, p, _, excess = chi2_classes(predicted, reference.class_priors, reference.n)
        decisions.append(("predicted_class", "chi2", statistic, p, excess))
    rejected = reject([d[3] for d in decisions], config.alpha, config.correction)
    results = [
        TestResult(f, t, s, p, bool(r) and e >= config.min_effect, e)
        for (f, t, s, p, e), r in zip(decisions, rejected, strict=True)
    ]
    drifted_flags = np.array([r.drifted for r in results], dtype=bool)
    share = float(drifted_flags.mean()) if len(drifted_flags) else 0.0
    drifted = bool(drifted_flags.any()) and share > config.min_drifted_share
    return WindowVerdict(n, tuple(results + effects), len(decisions), share, drifted, inputs - n)

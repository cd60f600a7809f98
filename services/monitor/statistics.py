"""Two-sample drift statistics of one window against a reference profile.

* numeric features: two-sample Kolmogorov-Smirnov against the profile's kept sample (the decision), with
  the Population Stability Index (on the profile's histogram bins) and the Wasserstein distance
  (in units of the reference's standard deviation) as effect sizes;
* the predicted-class distribution: chi-square goodness of fit against the class priors;
* one multiple-testing correction over every test of the window (Benjamini-Hochberg or
  Bonferroni), so a window's false-alarm rate stays near `alpha` however many features we test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

PSI_EPS = 1e-4


@dataclass(frozen=True)
class ColumnReference:
    """What a profile keeps about one column (see services/profiles)."""

    name: str
    sample: np.ndarray  # sorted reference values
    edges: np.ndarray
    proportions: np.ndarray
    std: float

    @classmethod
    def from_profile(cls, name: str, column: dict[str, Any]) -> ColumnReference:
        counts = np.asarray(column["hist_counts"], dtype=np.float64)
        return cls(
            name=name,
            sample=np.sort(np.asarray(column["sample"], dtype=np.float64)),
            edges=np.asarray(column["hist_edges"], dtype=np.float64),
            proportions=counts / max(counts.sum(), 1.0),
            std=float(column["std"]),
        )


@dataclass(frozen=True)
class TestResult:
    feature: str
    test: str  # "ks", "chi2", "psi", "wasserstein"
    statistic: float
    p_value: float = float("nan")  # NaN for effect sizes
    drifted: bool = False


def ks_test(live: np.ndarray, ref: ColumnReference) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov with the asymptotic p-value (conservative with pixel ties)."""
    d, _ = ecdf_distances(live, ref)
    return d, float(ks_p_value(d, len(live), len(ref.sample)))


def ecdf_distances(live: np.ndarray, ref: ColumnReference) -> tuple[float, float]:
    """(KS statistic, Wasserstein distance) from the two empirical CDFs, in one pass."""
    live = np.sort(np.asarray(live, dtype=np.float64))
    pooled = np.sort(np.concatenate([live, ref.sample]))
    cdf_live = np.searchsorted(live, pooled, side="right") / len(live)
    cdf_ref = np.searchsorted(ref.sample, pooled, side="right") / len(ref.sample)
    gaps = np.abs(cdf_live - cdf_ref)
    return float(gaps.max()), float(np.sum(gaps[:-1] * np.diff(pooled)))


def ks_p_value(d: float | np.ndarray, n: int, m: int | np.ndarray) -> np.ndarray:
    """Two-sided asymptotic p-value of two-sample KS statistics: Kolmogorov's limit at sqrt(nm/(n+m))·D.

    Vectorised (one ufunc call for every feature of a window); with the ties of pixel data it
    is conservative, i.e. it raises fewer false alarms than its nominal level.
    """
    en = n * np.asarray(m, dtype=np.float64) / (n + np.asarray(m, dtype=np.float64))
    return np.clip(special.kolmogorov(np.sqrt(en) * np.asarray(d, dtype=np.float64)), 0.0, 1.0)


def psi(live: np.ndarray, ref: ColumnReference) -> float:
    """Population Stability Index over the reference bins; values beyond them fall in the end bins."""
    inner = ref.edges[1:-1]
    idx = np.searchsorted(inner, live, side="right")
    live_p = np.bincount(idx, minlength=len(ref.proportions)).astype(np.float64) / max(len(live), 1)
    p = np.clip(live_p, PSI_EPS, None)
    q = np.clip(ref.proportions, PSI_EPS, None)
    return float(np.sum((p - q) * np.log(p / q)))


def wasserstein(live: np.ndarray, ref: ColumnReference) -> float:
    """Earth mover's distance, in reference standard deviations (raw when the column is constant)."""
    return scaled_wasserstein(ecdf_distances(live, ref)[1], ref)


def scaled_wasserstein(distance: float, ref: ColumnReference) -> float:
    return distance / ref.std if ref.std > 1e-9 else distance


def chi2_classes(predicted: Sequence[str], priors: dict[str, float]) -> tuple[float, float]:
    """Chi-square of predicted-class counts against the priors; unknown classes count as a shift."""
    classes = sorted(priors)
    n = len(predicted)
    counts = {c: 0 for c in classes}
    unknown = 0
    for label in predicted:
        if label in counts:
            counts[label] += 1
        else:
            unknown += 1
    observed = np.array([counts[c] for c in classes] + [unknown], dtype=np.float64)
    expected = np.array([priors[c] * n for c in classes] + [0.0])
    # A class the reference never saw gets a tiny expectation, so seeing it is a large shift.
    expected = np.clip(expected, 1e-3, None)
    expected *= n / expected.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    dof = max(len(classes) - 1, 1)
    return statistic, float(stats.chi2.sf(statistic, dof))


def reject(p_values: Sequence[float], alpha: float, method: str) -> np.ndarray:
    """Which hypotheses are rejected at family-wise level alpha (Bonferroni) or FDR alpha (BH)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool)
    p = np.where(np.isnan(p), 1.0, p)
    if method == "bonferroni":
        return p <= alpha / m
    if method != "bh":
        raise ValueError(f"unknown correction {method!r}: use 'bh' or 'bonferroni'")
    order = np.argsort(p)
    thresholds = alpha * np.arange(1, m + 1) / m
    below = p[order] <= thresholds
    out = np.zeros(m, dtype=bool)
    if below.any():
        k = int(np.max(np.nonzero(below)[0]))
        out[order[: k + 1]] = True
    return out

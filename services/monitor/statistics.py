"""Two-sample drift statistics of one window against a reference profile.

* continuous features: two-sample Kolmogorov-Smirnov against the profile's kept sample;
* discrete features (a handful of distinct values, like the 17 grey levels of a digit pixel): KS
  is not valid with ties (its p-values are far too large), so a chi-square test of homogeneity
  on the counts per reference level, plus one cell for values the reference never had;
* per feature, the Population Stability Index (on the reference's bins or levels) as the effect
  size a drift decision needs besides significance, and the Wasserstein distance (in reference
  standard deviations) for people to read;
* the predicted-class distribution: chi-square goodness of fit against the class priors, with the
  class PSI as its effect size;
* one multiple-testing correction over every test of the window (Benjamini-Hochberg or
  Bonferroni), so a window's false-alarm rate stays near `alpha` however many features we test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from services.profiles.reference import MAX_LEVELS

PSI_EPS = 1e-4
# Values equal to this many decimals are one level (float32 round trips of k/255 grey levels).
LEVEL_DECIMALS = 6
# Cells whose pooled count is below this are merged into one, as chi-square's approximation needs.
MIN_CELL = 5


@dataclass(frozen=True)
class ColumnReference:
    """What a profile keeps about one column (see services/profiles)."""

    name: str
    sample: np.ndarray  # sorted reference values
    edges: np.ndarray
    proportions: np.ndarray
    std: float
    levels: np.ndarray | None = None  # sorted distinct values, when the column is discrete
    level_counts: np.ndarray | None = None  # reference count per level
    n: float = 0.0  # reference rows (0: unknown)

    @property
    def discrete(self) -> bool:
        return self.levels is not None

    @classmethod
    def from_profile(cls, name: str, column: dict[str, Any]) -> ColumnReference:
        counts = np.asarray(column["hist_counts"], dtype=np.float64)
        sample = np.sort(np.asarray(column["sample"], dtype=np.float64))
        levels = level_counts = None
        if column.get("levels") is not None:
            levels = np.asarray(column["levels"], dtype=np.float64)
            level_counts = np.asarray(column["level_counts"], dtype=np.float64)
        elif len(np.unique(sample)) <= MAX_LEVELS:
            # A profile written before levels were kept: its sample (every k-th sorted value) still
            # gives each level's share to within one sample value.
            levels, sample_counts = np.unique(sample, return_counts=True)
            level_counts = sample_counts.astype(np.float64)
        return cls(
            name=name,
            sample=sample,
            edges=np.asarray(column["hist_edges"], dtype=np.float64),
            proportions=counts / max(counts.sum(), 1.0),
            std=float(column["std"]),
            levels=levels,
            level_counts=level_counts,
            n=float(counts.sum()),
        )


@dataclass(frozen=True)
class TestResult:
    feature: str
    test: str  # "ks", "chi2", "psi", "wasserstein"
    statistic: float
    p_value: float = float("nan")  # NaN for effect sizes
    drifted: bool = False  # decision tests: significant after correction and effect >= the floor
    effect: float = float("nan")  # decision tests: the effect size the floor applies to (excess PSI)


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


def level_cells(live: np.ndarray, ref: ColumnReference) -> tuple[np.ndarray, np.ndarray]:
    """(reference counts, live counts) over the distinct values of both samples, in value order.

    The cells are the union of the reference's levels and the live values, so a value the
    reference never had gets a cell of its own (a pixel that was always blank now carrying noise);
    `merge_sparse` then joins neighbouring rare values, whichever sample they came from.
    """
    if ref.levels is None or ref.level_counts is None:
        raise ValueError(f"column {ref.name} is not discrete")
    ref_levels = np.round(ref.levels, LEVEL_DECIMALS)
    live_values, live_n = np.unique(np.round(np.asarray(live, dtype=np.float64), LEVEL_DECIMALS), return_counts=True)
    cells = np.union1d(ref_levels, live_values)
    ref_counts = np.zeros(len(cells))
    np.add.at(ref_counts, np.searchsorted(cells, ref_levels), ref.level_counts)
    live_counts = np.zeros(len(cells))
    live_counts[np.searchsorted(cells, live_values)] = live_n
    return ref_counts, live_counts


def merge_sparse(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join neighbouring cells (in value order) until each holds at least MIN_CELL values of both
    samples together, as the chi-square approximation needs; a short tail joins the last cell."""
    ref_out: list[float] = []
    live_out: list[float] = []
    acc_ref = acc_live = 0.0
    for r, v in zip(ref_counts, live_counts, strict=True):
        acc_ref += r
        acc_live += v
        if acc_ref + acc_live >= MIN_CELL:
            ref_out.append(acc_ref)
            live_out.append(acc_live)
            acc_ref = acc_live = 0.0
    if acc_ref + acc_live > 0:
        if ref_out:
            ref_out[-1] += acc_ref
            live_out[-1] += acc_live
        else:
            ref_out.append(acc_ref)
            live_out.append(acc_live)
    return np.array(ref_out), np.array(live_out)


def chi2_homogeneity(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two samples' counts over the same cells come from one distribution."""
    if len(ref_counts) < 2:
        return 0.0, 1.0
    table = np.stack([ref_counts, live_counts])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / np.clip(expected, 1e-12, None)))
    return statistic, float(stats.chi2.sf(statistic, len(ref_counts) - 1))


def psi_counts(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """PSI between two count vectors over the same cells."""
    p = np.clip(live_counts / max(live_counts.sum(), 1.0), PSI_EPS, None)
    q = np.clip(ref_counts / max(ref_counts.sum(), 1.0), PSI_EPS, None)
    return float(np.sum((p - q) * np.log(p / q)))


def excess_psi(value: float, cells: int, n: float, m: float) -> float:
    """PSI beyond what sampling noise alone gives: under no change, PSI ≈ chi-square / sample size,
    so its expectation is about (cells - 1)·(1/n + 1/m) for samples of n and m. The effect floor
    applies to this, so one threshold means the same on a window of 100 predictions and of 5000."""
    noise = (max(cells, 1) - 1) * (1.0 / max(n, 1.0) + (1.0 / m if m > 0 else 0.0))
    return max(0.0, value - noise)


def level_test(live: np.ndarray, ref: ColumnReference) -> tuple[float, float, float, float]:
    """(chi-square, p-value, PSI, excess PSI) of a discrete column's live values against its levels."""
    ref_counts, live_counts = merge_sparse(*level_cells(live, ref))
    statistic, p = chi2_homogeneity(ref_counts, live_counts)
    value = psi_counts(ref_counts, live_counts)
    return statistic, p, value, excess_psi(value, len(ref_counts), live_counts.sum(), ref_counts.sum())


def psi(live: np.ndarray, ref: ColumnReference) -> float:
    """Population Stability Index over the reference bins; values beyond them fall in the end bins."""
    return binned_psi(live, ref)[0]


def binned_psi(live: np.ndarray, ref: ColumnReference) -> tuple[float, float]:
    """(PSI, excess PSI) over the reference's histogram bins (the cells either sample fills)."""
    inner = ref.edges[1:-1]
    idx = np.searchsorted(inner, live, side="right")
    live_counts = np.bincount(idx, minlength=len(ref.proportions)).astype(np.float64)
    live_p = live_counts / max(len(live), 1)
    p = np.clip(live_p, PSI_EPS, None)
    q = np.clip(ref.proportions, PSI_EPS, None)
    value = float(np.sum((p - q) * np.log(p / q)))
    cells = int(np.count_nonzero((live_counts > 0) | (ref.proportions > 0)))
    return value, excess_psi(value, cells, len(live), ref.n)


def wasserstein(live: np.ndarray, ref: ColumnReference) -> float:
    """Earth mover's distance, in reference standard deviations (raw when the column is constant)."""
    return scaled_wasserstein(ecdf_distances(live, ref)[1], ref)


def scaled_wasserstein(distance: float, ref: ColumnReference) -> float:
    return distance / ref.std if ref.std > 1e-9 else distance


def chi2_classes(
    predicted: Sequence[str], priors: dict[str, float], reference_n: float = 0.0
) -> tuple[float, float, float, float]:
    """(chi-square, p-value, PSI, excess PSI) of predicted-class counts against the priors (from
    `reference_n` labels; 0: exact); unknown classes count as a shift."""
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
    prior = np.array([priors[c] for c in classes] + [0.0])
    value = psi_counts(prior, observed)
    cells = int(np.count_nonzero((prior > 0) | (observed > 0)))
    return statistic, float(stats.chi2.sf(statistic, dof)), value, excess_psi(value, cells, n, reference_n)


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

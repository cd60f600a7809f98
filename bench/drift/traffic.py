"""Digits traffic for drift checks: a reference split, a live split, a real classifier, and shifts.

Shared by `make eval-drift` and tests/monitor. The reference profile is built with
services.profiles.build_profile from the reference split; live traffic samples the other split,
so unshifted traffic is the same distribution but never the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from services.preprocessing.shifts import Shift, inversion, noise, rotation
from services.profiles import build_profile

__all__ = ["DigitsTraffic", "Shift", "inversion", "noise", "prior_weights", "rotation"]


@dataclass
class DigitsTraffic:
    reference_x: np.ndarray
    reference_y: np.ndarray
    live_x: np.ndarray
    live_y: np.ndarray
    classifier: LogisticRegression
    # Each live image's position in scikit-learn's file, which keeps each writer's digits together.
    live_index: np.ndarray | None = None

    @classmethod
    def load(cls, seed: int = 0) -> DigitsTraffic:
        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)  # canonical features: levels 0..16 → [0, 1]
        y = digits.target
        index = np.arange(len(x))
        rx, lx, ry, ly, _, li = train_test_split(x, y, index, test_size=0.5, random_state=seed, stratify=y)
        clf = LogisticRegression(max_iter=2000).fit(rx, ry)
        return cls(rx, ry, lx, ly, clf, li)

    def resplit(self, seed: int) -> DigitsTraffic:
        """Another random reference/live split of the same images (the classifier is kept)."""
        x = np.concatenate([self.reference_x, self.live_x])
        y = np.concatenate([self.reference_y, self.live_y])
        rx, lx, ry, ly = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
        return DigitsTraffic(rx, ry, lx, ly, self.classifier)

    def writers_block(self, start: int, span: int) -> np.ndarray:
        """Live rows whose images sit at [start, start + span) of scikit-learn's file: a few writers' digits
        (the UCI file groups each writer's; 1000 positions hold about 7 writers, half of them live here)."""
        if self.live_index is None:
            raise ValueError("this split has no file positions")
        return np.nonzero((self.live_index >= start) & (self.live_index < start + span))[0]

    def profile(self, snapshot_id: str) -> dict:
        return build_profile(snapshot_id, self.reference_x, [str(v) for v in self.reference_y])

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        shift: Shift | None = None,
        class_weights: np.ndarray | None = None,
        replace: bool = True,
        pool: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """n live examples (with replacement by default; from `pool`, live row numbers, when given):
        features, true labels, predicted classes, scores."""
        if pool is not None:
            idx = pool[rng.integers(0, len(pool), n)]
        elif not replace:
            idx = rng.permutation(len(self.live_x))[:n]
        elif class_weights is None:
            idx = rng.integers(0, len(self.live_x), n)
        else:
            p = class_weights[self.live_y]
            idx = rng.choice(len(self.live_x), n, p=p / p.sum())
        x = self.live_x[idx].copy()
        if shift is not None:
            x = np.clip(shift(x, rng), 0.0, 1.0).astype(np.float32)
        scores = self.classifier.predict_proba(x).astype(np.float32)
        return x, self.live_y[idx], scores.argmax(axis=1), scores


def prior_weights(strength: float, favoured: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """Class weights: the favoured classes get (1 + 9·strength)× the traffic of the others."""
    w = np.ones(10)
    w[list(favoured)] *= 1.0 + 9.0 * strength
    return w

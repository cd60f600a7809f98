"""Covariate shifts of digit features (a noisier sensor, a rotated camera, inverted polarity).

Used to show and to evaluate drift detection: `make eval-drift`, tests/monitor and `flywheel demo`.
Each shift maps a batch of 64-feature rows (and a random generator) to shifted rows, clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def noise(sigma: float) -> Shift:
    return lambda x, rng: x + rng.normal(0.0, sigma, x.shape)


def rotation(degrees: float) -> Shift:
    def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        imgs = x.reshape(-1, 8, 8)
        out = ndimage.rotate(imgs, degrees, axes=(2, 1), reshape=False, order=1, mode="constant")
        return out.reshape(len(x), 64)

    return rotate


def inversion(fraction: float) -> Shift:
    """Invert a fraction of the images (1 - x): a camera or scanner with the opposite polarity."""

    def invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < fraction
        x = x.copy()
        x[flip] = 1.0 - x[flip]
        return x

    return invert


def chain(*shifts: Shift) -> Shift:
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for shift in shifts:
            x = shift(x, rng)
        return x

    return apply


def apply_shift(shift: Shift, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(shift(x, rng), 0.0, 1.0).astype(np.float32)

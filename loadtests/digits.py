"""scikit-learn's digits as PNGs and features, for load generators (nothing downloaded)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from services.preprocessing.digits import features_to_png, sklearn_digits_features


def digit_pngs(limit: int = 500) -> tuple[list[bytes], np.ndarray, list[str]]:
    digits = load_digits()
    features = sklearn_digits_features(digits.images[:limit])
    return [features_to_png(f) for f in features], features, [str(t) for t in digits.target[:limit]]

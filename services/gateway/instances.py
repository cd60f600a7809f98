"""The friendly route's codec: application instances → the model's input tensor, scores → labels.

An instance of a `digits_8x8` model is an 8×8 image as base64 PNG (a string, or {"b64": …}) or
64 numbers in [0, 1] (a list, or {"features": […]}).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from services.gateway.errors import InvalidInput
from services.gateway.model_cards import ModelCard
from services.preprocessing import FEATURE_DIM, InvalidImage, PixelBudget, png_to_features


def has_images(instances: list[Any]) -> bool:
    """Whether decoding the instances means decoding images (worth a thread of its own)."""
    return any(isinstance(x, (str, dict)) for x in instances)


def instances_to_features(card: ModelCard, instances: list[Any], max_pixels: int) -> np.ndarray:
    """The model's input tensor; the images among the instances decode `max_pixels` at most in all."""
    if card.preprocess != "digits_8x8":
        raise InvalidInput(f"model {card.model!r} declares preprocess {card.preprocess!r}, unknown to this gateway")
    budget = PixelBudget(max_pixels)
    rows = [_instance(i, x, budget) for i, x in enumerate(instances)]
    return np.stack(rows).astype(np.float32)


def _instance(i: int, x: Any, budget: PixelBudget) -> np.ndarray:
    if isinstance(x, dict):
        if "b64" in x:
            x = x["b64"]
        elif "features" in x:
            x = x["features"]
        else:
            raise InvalidInput(f"instances[{i}]: an object needs 'b64' (PNG) or 'features' (64 numbers)")
    if isinstance(x, str):
        try:
            data = base64.b64decode(x, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"instances[{i}]: not valid base64") from None
        try:
            return png_to_features(data, budget)
        except InvalidImage as exc:
            raise InvalidInput(f"instances[{i}]: {exc}") from None
    if isinstance(x, list):
        if len(x) != FEATURE_DIM or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            raise InvalidInput(f"instances[{i}]: expected {FEATURE_DIM} numbers, got {_describe(x)}")
        arr = np.asarray(x, dtype=np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InvalidInput(f"instances[{i}]: features must be finite numbers in [0, 1]")
        return arr
    raise InvalidInput(f"instances[{i}]: expected a base64 PNG string or {FEATURE_DIM} numbers, got {_describe(x)}")


def _describe(x: Any) -> str:
    if isinstance(x, list):
        return f"a list of {len(x)}"
    return type(x).__name__


def predictions(card: ModelCard, scores: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for row in scores:
        k = int(np.argmax(row))
        label = card.labels[k] if k < len(card.labels) else str(k)
        probs = {card.labels[j] if j < len(card.labels) else str(j): float(p) for j, p in enumerate(row)}
        out.append({"label": label, "class": k, "probabilities": probs})
    return out

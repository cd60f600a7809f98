"""The friendly route's codec: application instances → the model's input tensor, scores → labels.

An instance is what the version's project takes (its flywheel.json carries the input spec), encoded
by the same code that encoded the training data (services/preprocessing):

* image projects: a base64 image (PNG, JPEG or WebP) as a string or `{"b64": …}`; `{"url": …}`
  for an image on an allowed host (fetched bounded, FLYWHEEL_GATEWAY_FETCH_ALLOWED_HOSTS); or, for
  small images, the pixels' values in [0, 1] as a list or `{"features": […]}`;
* tabular projects: the row, `{column: value}`;
* text projects: the text, as a string or `{"text": …}`.

A bad instance is refused naming it and its field (`instances[2].age: is above the maximum 130`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.fetching import FetchFailed
from services.gateway.errors import InvalidInput
from services.gateway.model_cards import ModelCard
from services.preprocessing import Encoded, InputCodec, InvalidField, PixelBudget

# url → bytes (bounded, allow-listed), or FetchFailed saying why not.
UrlReader = Callable[[str], bytes]


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # (n, *input shape) float32, the model's input tensor
    features: np.ndarray  # (n, d): what the prediction logs carry and the monitor tests


def codec_of(card: ModelCard) -> InputCodec:
    if card.codec is None:
        raise InvalidInput(
            f"model {card.model!r} v{card.version} has no input spec in its flywheel.json: call it with "
            "the v2 protocol (`/v2/models/…/infer`), or deploy it for a project"
        )
    return card.codec


def encode_instances(
    card: ModelCard, instances: list[Any], read_url: UrlReader | None = None, max_pixels: int | None = None
) -> Batch:
    """The model's input tensor and the monitored features; the images among the instances decode
    `max_pixels` at most in all (a request's pixel budget)."""
    codec = codec_of(card)
    budget = PixelBudget(max_pixels) if max_pixels is not None else None
    encoded = [_instance(codec, i, x, read_url, budget) for i, x in enumerate(instances)]
    inputs = np.stack([e.model_input for e in encoded]).astype(np.float32, copy=False)
    features = np.stack([e.features for e in encoded]).astype(np.float32, copy=False)
    return Batch(inputs, features)


def _instance(codec: InputCodec, i: int, x: Any, read_url: UrlReader | None, budget: PixelBudget | None) -> Encoded:
    where = f"instances[{i}]"
    try:
        if codec.kind == "tabular":
            return codec.encode_row(x)
        if codec.kind == "text":
            return codec.encode_text(x["text"] if isinstance(x, dict) and "text" in x else x)
        return _image(codec, where, x, read_url, budget)
    except InvalidField as exc:
        raise InvalidInput(f"{exc.at(where)}: {exc.reason}") from None


def _image(codec: InputCodec, where: str, x: Any, read_url: UrlReader | None, budget: PixelBudget | None) -> Encoded:
    if isinstance(x, dict):
        keys = [k for k in ("b64", "url", "features") if k in x]
        if len(keys) != 1:
            raise InvalidInput(f"{where}: an object needs exactly one of 'b64' (an image), 'url' or 'features'")
        if keys[0] == "url":
            if read_url is None or not isinstance(x["url"], str):
                raise InvalidInput(f"{where}.url: this gateway fetches no URLs (FLYWHEEL_GATEWAY_FETCH_ALLOWED_HOSTS)")
            try:
                data = read_url(x["url"])
            except FetchFailed as exc:
                raise InvalidInput(f"{where}.url: {exc.reason}") from None
            return codec.encode_image(data, budget)
        x = x[keys[0]]
    if isinstance(x, str):
        try:
            data = base64.b64decode(x, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: not valid base64") from None
        return codec.encode_image(data, budget)
    if isinstance(x, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in x):
            raise InvalidInput(f"{where}: the pixels must be numbers")
        return codec.encode_pixels(x)
    raise InvalidInput(f"{where}: expected a base64 image, {{'url': …}} or the pixels, got {type(x).__name__}")


def predictions(card: ModelCard, scores: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for row in scores:
        k = int(np.argmax(row))
        label = card.labels[k] if k < len(card.labels) else str(k)
        probs = {card.labels[j] if j < len(card.labels) else str(j): float(p) for j, p in enumerate(row)}
        out.append({"label": label, "class": k, "probabilities": probs})
    return out

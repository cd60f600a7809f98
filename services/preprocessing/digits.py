"""8×8 digit images ↔ the 64 features the digits models take.

Canonical features: 64 float32 values in [0, 1], row-major, 0 = background.  scikit-learn's
digits (0..16 ink levels) map to PNG grey levels by v * 255 / 16, and back by / 255.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

FEATURE_DIM = 64
SIDE = 8
DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
MAX_PNG_BYTES = 64 * 1024


class InvalidImage(ValueError):
    """The bytes are not an image we can turn into digit features; the message says why."""


def png_to_features(data: bytes) -> np.ndarray:
    """Decode an image (PNG, or anything Pillow reads) into 64 features in [0, 1].

    Images of another size are resized to 8×8 (area averaging); colour becomes grey.
    """
    if not data:
        raise InvalidImage("empty image")
    if len(data) > MAX_PNG_BYTES:
        raise InvalidImage(f"image is {len(data)} bytes; the limit is {MAX_PNG_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            grey = img.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidImage(f"not a decodable image: {exc}") from None
    if grey.size != (SIDE, SIDE):
        grey = grey.resize((SIDE, SIDE), Image.Resampling.BOX)
    return (np.asarray(grey, dtype=np.float32) / 255.0).reshape(FEATURE_DIM)


def features_to_png(features: np.ndarray) -> bytes:
    """64 features in [0, 1] → an 8×8 greyscale PNG."""
    arr = np.asarray(features, dtype=np.float32).reshape(SIDE, SIDE)
    if not np.isfinite(arr).all():
        raise InvalidImage("features contain NaN or infinity")
    pixels = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def sklearn_digits_features(images: np.ndarray) -> np.ndarray:
    """scikit-learn digits images (n, 8, 8) with levels 0..16 → (n, 64) canonical features.

    Quantised through the PNG grey levels, so a model trained on these sees exactly what a
    client sending PNGs sends.
    """
    grey = np.rint(np.asarray(images, dtype=np.float32) * 255.0 / 16.0)
    return (grey / 255.0).reshape(len(images), FEATURE_DIM).astype(np.float32)

"""8×8 digit images ↔ the 64 features the digits models take.

Canonical features: 64 float32 values in [0, 1], row-major, 0 = background.  scikit-learn's
digits (0..16 ink levels) map to PNG grey levels by v * 255 / 16, and back by / 255.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.preprocessing.image_decode import ImageLimits, InvalidImage, PixelBudget, decode_image

FEATURE_DIM = 64
SIDE = 8
DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
MAX_PNG_BYTES = 64 * 1024
# A digit is drawn at 8×8; a client may send a larger scan (resized here), never a poster.
DIGIT_IMAGE_LIMITS = ImageLimits(max_bytes=MAX_PNG_BYTES, max_width=1024, max_height=1024, max_pixels=1 << 20)


def png_to_features(data: bytes, budget: PixelBudget | None = None) -> np.ndarray:
    """Decode an image (PNG, JPEG, WebP, GIF or BMP, within DIGIT_IMAGE_LIMITS) into 64 features in [0, 1].

    Images of another size are resized to 8×8 (area averaging); colour becomes grey. `budget`: the
    pixels left to the request this image belongs to. InvalidImage when the bytes are not acceptable.
    """
    grey = decode_image(data, DIGIT_IMAGE_LIMITS, budget).convert("L")
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

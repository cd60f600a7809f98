"""The digits example project's input (examples/digits/project.yaml) through the shared image path.

Canonical features: 64 float32 values in [0, 1], row-major, 0 = background: what the generic
image preprocessing makes of any image under the digits spec (grey, 8×8 by area averaging,
/ 255). scikit-learn's digits (0..16 ink levels) map to PNG grey levels by v * 255 / 16.
"""

from __future__ import annotations

import numpy as np

from services.preprocessing.images import image_tensor, tensor_png
from services.projects.spec import ImageInput

FEATURE_DIM = 64
SIDE = 8
DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
MAX_PNG_BYTES = 64 * 1024
DIGITS_INPUT = ImageInput(
    kind="image", channels=1, height=SIDE, width=SIDE, resize="stretch", resample="box", layout="flat",
    max_bytes=MAX_PNG_BYTES, max_pixels=1 << 20,  # a larger scan is resized; never a poster
)  # fmt: skip


def png_to_features(data: bytes) -> np.ndarray:
    """Decode an image (PNG, JPEG or WebP) into 64 features in [0, 1] (InvalidImage when it cannot)."""
    return image_tensor(data, DIGITS_INPUT)[0].reshape(FEATURE_DIM)


def features_to_png(features: np.ndarray) -> bytes:
    """64 features in [0, 1] → an 8×8 greyscale PNG."""
    return tensor_png(np.clip(np.asarray(features, dtype=np.float32), 0.0, 1.0), DIGITS_INPUT)


def sklearn_digits_features(images: np.ndarray) -> np.ndarray:
    """scikit-learn digits images (n, 8, 8) with levels 0..16 → (n, 64) canonical features.

    Quantised through the PNG grey levels, so a model trained on these sees exactly what a
    client sending PNGs sends.
    """
    grey = np.rint(np.asarray(images, dtype=np.float32) * 255.0 / 16.0)
    return (grey / 255.0).reshape(len(images), FEATURE_DIM).astype(np.float32)

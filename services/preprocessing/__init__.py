"""Preprocessing shared by ingest, trainer, model server and gateway (never by importing a service).

A model declares its preprocessing by name in `flywheel.json` next to its artifact; the gateway
and the trainer look the name up here, so training and serving transform inputs identically.
"""

from services.preprocessing.digits import (
    DIGIT_LABELS,
    FEATURE_DIM,
    features_to_png,
    png_to_features,
)
from services.preprocessing.image_decode import ImageLimits, InvalidImage, PixelBudget, decode_array, decode_image

__all__ = [
    "DIGIT_LABELS",
    "FEATURE_DIM",
    "ImageLimits",
    "InvalidImage",
    "PixelBudget",
    "decode_array",
    "decode_image",
    "features_to_png",
    "png_to_features",
]

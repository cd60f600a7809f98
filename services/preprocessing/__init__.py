"""Preprocessing shared by ingest, lake, trainer, gateway and monitor (never by importing a service).

A project's `input` spec (services/projects) decides how a native input — an image, a tabular
row, a text — becomes the model's input tensor and the features the monitor tests; every
service builds its `InputCodec` from the same spec (a model version carries it in its
flywheel.json), so training and serving transform inputs identically. `images.py` holds the one
bounded image decoder.
"""

from services.preprocessing.codec import Encoded, FeatureSchema, InputCodec
from services.preprocessing.digits import (
    DIGIT_LABELS,
    FEATURE_DIM,
    features_to_png,
    png_to_features,
)
from services.preprocessing.errors import InvalidField, InvalidImage
from services.preprocessing.images import PixelBudget

__all__ = [
    "DIGIT_LABELS",
    "FEATURE_DIM",
    "Encoded",
    "FeatureSchema",
    "InputCodec",
    "InvalidField",
    "InvalidImage",
    "PixelBudget",
    "features_to_png",
    "png_to_features",
]

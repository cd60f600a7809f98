"""One project input → (model input, monitored features, stored original): the same code everywhere.

`InputCodec` is built from a project's `input` spec (or a model version's flywheel.json, which
carries it) and is what ingest, the lake, the trainer, the gateway and the monitor call:

| kind    | native input        | stored original    | model input           | features (events, lake)            |
|---------|---------------------|--------------------|-----------------------|------------------------------------|
| image   | PNG/JPEG/WebP bytes | the bytes as sent  | C×H×W (or flat)       | pixels (≤ 4096 values) or signature |
| tabular | JSON object         | canonical JSON row | one code per column   | the codes                          |
| text    | string              | UTF-8 text         | hashed n-gram counts  | the text signature                 |

`features` are what prediction logs and labels carry and the monitor tests; when they are not
the model input ("materialised"), the trainer re-reads the stored original and encodes it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.preprocessing import image_stats
from services.preprocessing.errors import InvalidField
from services.preprocessing.images import CONTENT_TYPES, PixelBudget, image_tensor, tensor_png
from services.preprocessing.tabular import TabularCodec
from services.preprocessing.text import TextCodec
from services.projects.spec import ImageInput, InputSpec, TabularInput, TextInput, materialised

ROW_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Encoded:
    model_input: np.ndarray  # float32, the codec's shape
    features: np.ndarray  # float32, 1-D: what travels with the example and the monitor tests
    stored: bytes  # the original to keep, content-addressed
    content_type: str


@dataclass(frozen=True)
class FeatureSchema:
    """What the features of a project are: their names and which are categorical or nullable.

    `image_shape`: the features are an image's pixels (C, H, W); profiles and the monitor add
    the derived image statistics computed from them."""

    names: tuple[str, ...]
    categorical: tuple[bool, ...]
    nullable: tuple[bool, ...]
    image_shape: tuple[int, int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "categorical": list(self.categorical),
            "nullable": list(self.nullable),
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureSchema:
        shape = doc.get("image_shape")
        return cls(
            tuple(str(n) for n in doc["names"]),
            tuple(bool(c) for c in doc["categorical"]),
            tuple(bool(c) for c in doc.get("nullable") or [False] * len(doc["names"])),
            (int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
        )


class InputCodec:
    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.materialised = materialised(spec)
        self._tabular = TabularCodec(spec) if isinstance(spec, TabularInput) else None
        self._text = TextCodec(spec) if isinstance(spec, TextInput) else None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def tabular(self) -> TabularCodec:
        if self._tabular is None:
            raise InvalidField("", f"this project takes {self.spec.kind} input, not a row")
        return self._tabular

    def schema(self) -> FeatureSchema:
        spec = self.spec
        if isinstance(spec, TabularInput):
            return FeatureSchema(
                tuple(c.name for c in spec.columns),
                tuple(c.type == "category" for c in spec.columns),
                tuple(c.nullable for c in spec.columns),
            )
        if isinstance(spec, TextInput):
            assert self._text is not None
            names = tuple(self._text.signature_names)
        elif self.materialised:
            return FeatureSchema(
                tuple(f"f{i}" for i in range(spec.size)),
                (False,) * spec.size,
                (False,) * spec.size,
                (spec.channels, spec.height, spec.width),
            )
        else:
            names = tuple(image_stats.signature_names(spec))
        return FeatureSchema(names, (False,) * len(names), (False,) * len(names))

    # -- native inputs → Encoded --------------------------------------------------------------
    def encode_image(self, data: bytes, budget: PixelBudget | None = None) -> Encoded:
        spec = self._image()
        tensor, fmt = image_tensor(data, spec, budget)
        model_input = tensor.reshape(spec.shape)
        return Encoded(model_input, self._image_features(model_input[None])[0], data, CONTENT_TYPES[fmt])

    def encode_pixels(self, values: Sequence[float] | np.ndarray) -> Encoded:
        """A small, plain-scale image given as its C·H·W values in [0, 1] (stored as the PNG they make)."""
        spec = self._image()
        if not self.materialised:
            raise InvalidField("", f"send the image itself: {spec.size} values are too many to send as numbers")
        arr = np.asarray(values, dtype=np.float64).reshape(-1) if len(values) else np.zeros(0)
        if arr.size != spec.size:
            raise InvalidField("", f"has {arr.size} values; this project's image is {spec.size}")
        return self.encode_image(tensor_png(arr, spec))

    def encode_row(self, row: Any) -> Encoded:
        codes, canonical = self.tabular.check(row)
        return Encoded(codes, codes, self.tabular.canonical_bytes(canonical), ROW_TYPE)

    def encode_text(self, text: Any) -> Encoded:
        codec = self._text_codec()
        clean = codec.check(text)
        return Encoded(codec.vector(clean), codec.signature(clean), clean.encode("utf-8"), TEXT_TYPE)

    def encode_stored(self, data: bytes) -> np.ndarray:
        """The model input of a stored original (the trainer rebuilding inputs from objects)."""
        if self._tabular is not None:
            return self._tabular.from_bytes(data)
        if self._text is not None:
            return self._text.vector(self._text.from_bytes(data))
        return image_tensor(data, self._image())[0].reshape(self._image().shape)

    def features_of(self, model_inputs: np.ndarray) -> np.ndarray:
        """(n, …) model inputs → (n, d) features (images only: text features need the text itself)."""
        if isinstance(self.spec, ImageInput):
            return self._image_features(model_inputs)
        if isinstance(self.spec, TabularInput):
            return np.asarray(model_inputs, dtype=np.float32).reshape(len(model_inputs), -1)
        raise TypeError("text features come from the text (encode_text)")

    # -- internals ---------------------------------------------------------------------------------
    def _image(self) -> ImageInput:
        if not isinstance(self.spec, ImageInput):
            raise InvalidField("", f"this project takes {self.spec.kind} input, not an image")
        return self.spec

    def _text_codec(self) -> TextCodec:
        if self._text is None:
            raise InvalidField("", f"this project takes {self.spec.kind} input, not text")
        return self._text

    def _image_features(self, model_inputs: np.ndarray) -> np.ndarray:
        spec = self._image()
        x = np.asarray(model_inputs, dtype=np.float32)
        if self.materialised:
            return x.reshape(len(x), -1)
        return image_stats.image_signature(x, spec)

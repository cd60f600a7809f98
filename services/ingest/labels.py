"""A label as ingest sees it before and after validation, whatever transport brought it.

`LabelInput` is what an adapter parses (native JSON, a Label Studio payload, a RawLabel);
`validate()` turns it into a `ValidLabel` whose image is a decodable PNG and whose features
are the 64 canonical digit features, or raises InvalidInput naming the field and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from services.ingest.digit_png import features as png_features
from services.ingest.errors import InvalidInput
from services.preprocessing import FEATURE_DIM, InvalidImage, features_to_png

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
ACTIONS = (CREATED, UPDATED, DELETED)
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class LabelInput:
    example_id: str
    label: str
    annotator: str
    source: str  # "api", "label-studio", "grpc", "kafka"
    action: str = CREATED
    image: bytes | None = None
    features: Sequence[float] | None = None
    annotation_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # The producer's own identity for this fact (a RawLabel's event_id, a Label Studio
    # annotation version); empty means the event id is derived from the content.
    identity: str = ""
    # Where the label sits in its request ("labels[3]"), for error messages.
    where: str = ""
    trace_id: str = ""
    synthetic: bool = False  # load-test traffic: stored, published marked, kept out of datasets


@dataclass(frozen=True)
class ValidLabel:
    input: LabelInput
    png: bytes | None  # None only for deletes
    features: np.ndarray | None
    updated_at: datetime
    created_at: datetime
    record_key: str = field(default="")

    @property
    def action(self) -> str:
        return self.input.action


def record_key(example_id: str, annotation_id: str) -> str:
    """The SQL row a label lives in: one per annotation, or one per example without annotation ids."""
    return f"annotation:{annotation_id}" if annotation_id else f"example:{example_id}"


def _field(inp: LabelInput, name: str) -> str:
    return f"{inp.where}.{name}" if inp.where else name


def _check_id(inp: LabelInput, name: str, value: str, required: bool) -> None:
    if not value:
        if required:
            raise InvalidInput(_field(inp, name), "is required and must be a non-empty string")
        return
    if len(value) > MAX_ID_CHARS:
        raise InvalidInput(_field(inp, name), f"is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    if not value.isprintable():
        raise InvalidInput(_field(inp, name), "must contain printable characters only")


def validate(inp: LabelInput, allowed_labels: Sequence[str], now: datetime | None = None) -> ValidLabel:
    """Check one label against the schema and decode its image; raise InvalidInput on the first problem."""
    now = now or datetime.now(UTC)
    if inp.action not in ACTIONS:
        raise InvalidInput(_field(inp, "action"), f"{inp.action!r} is not one of {', '.join(ACTIONS)}")
    _check_id(inp, "example_id", inp.example_id, required=True)
    _check_id(inp, "annotation_id", inp.annotation_id, required=False)
    updated = _utc(inp.updated_at) or now
    created = _utc(inp.created_at) or updated
    key = record_key(inp.example_id, inp.annotation_id)
    if inp.action == DELETED:
        return ValidLabel(inp, None, None, updated, created, key)
    _check_id(inp, "annotator", inp.annotator, required=True)
    if inp.label not in allowed_labels:
        raise InvalidInput(
            _field(inp, "label"), f"{inp.label!r} is not in the label schema ({', '.join(allowed_labels)})"
        )
    has_image, has_features = bool(inp.image), inp.features is not None and len(inp.features) > 0
    if has_image == has_features:
        raise InvalidInput(_field(inp, "image"), "give exactly one of an image (base64 PNG) or 64 features")
    if has_image:
        assert inp.image is not None
        try:
            features = png_features(inp.image)
        except InvalidImage as exc:
            raise InvalidInput(_field(inp, "image"), str(exc)) from None
        return ValidLabel(inp, inp.image, features, updated, created, key)
    assert inp.features is not None
    values = list(inp.features)
    if len(values) != FEATURE_DIM:
        raise InvalidInput(_field(inp, "features"), f"has {len(values)} values; {FEATURE_DIM} are required")
    if not all(isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise InvalidInput(_field(inp, "features"), "every value must be a finite number in [0, 1]")
    png = features_to_png(np.asarray(values, dtype=np.float32))
    # The stored object is the truth: features are what decoding that object gives.
    return ValidLabel(inp, png, png_features(png), updated, created, key)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

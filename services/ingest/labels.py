"""A label as ingest sees it before and after validation, whatever transport brought it.

`LabelInput` is what an adapter parses (native JSON, a Label Studio payload, a RawLabel, a fetched
Label Studio task); `validate()` checks it against its project's spec (services/projects) and turns
it into a `ValidLabel`: the project version it was checked against, and the input encoded by the
shared preprocessing (the stored original, the features carried downstream), or raises
InvalidInput naming the field and the reason (`labels[3].row.age: is above the maximum 130`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ingest.errors import InvalidInput
from services.preprocessing import Encoded, InputCodec, InvalidField
from services.projects.catalog import Catalog, Project, UnknownProject

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
    # The example's input: exactly one of these, as the project's kind asks (deletes carry none).
    image: bytes | None = None  # image projects: the encoded image
    features: Sequence[float] | None = None  # small image projects: the pixels' values in [0, 1]
    row: Any = None  # tabular projects: {column: value}
    text: Any = None  # text projects: the document
    project: str = ""  # empty: ingest's default project
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
    project: Project
    encoded: Encoded | None  # None only for deletes
    updated_at: datetime
    created_at: datetime
    record_key: str = field(default="")

    @property
    def action(self) -> str:
        return self.input.action


def record_key(project: str, example_id: str, annotation_id: str) -> str:
    """The SQL row a label lives in: one per annotation (or per example without annotation ids) per project."""
    return f"{project}|annotation:{annotation_id}" if annotation_id else f"{project}|example:{example_id}"


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


def project_of(inp: LabelInput, catalog: Catalog, default_project: str) -> Project:
    name = inp.project or default_project
    if not name:
        raise InvalidInput(_field(inp, "project"), "is required (this ingest has no default project)")
    try:
        return catalog.get(name)
    except UnknownProject as exc:
        raise InvalidInput(_field(inp, "project"), str(exc)) from None


INPUT_FIELDS = {"image": ("image", "features"), "tabular": ("row",), "text": ("text",)}


def _encode(inp: LabelInput, codec: InputCodec) -> Encoded:
    given = [
        name
        for name, value in (("image", inp.image), ("features", inp.features), ("row", inp.row), ("text", inp.text))
        if value is not None and (not isinstance(value, bytes | list | tuple) or len(value) > 0)
    ]
    accepted = INPUT_FIELDS[codec.kind]
    wrong = [g for g in given if g not in accepted]
    if wrong:
        raise InvalidInput(
            _field(inp, wrong[0]), f"this project takes {codec.kind} input: give {' or '.join(accepted)}"
        )
    if len(given) != 1:
        what = " or ".join(accepted)
        raise InvalidInput(_field(inp, accepted[0]), f"give exactly one {what} for a {codec.kind} project")
    name = given[0]
    try:
        if name == "image":
            return codec.encode_image(bytes(inp.image))  # type: ignore[arg-type]
        if name == "features":
            return codec.encode_pixels(list(inp.features))  # type: ignore[arg-type]
        if name == "row":
            return codec.encode_row(inp.row)
        return codec.encode_text(inp.text)
    except InvalidField as exc:
        raise InvalidInput(exc.at(_field(inp, name)), exc.reason) from None


def validate(
    inp: LabelInput,
    catalog: Catalog,
    default_project: str,
    now: datetime | None = None,
    codecs: dict | None = None,
    with_input: bool = True,
) -> ValidLabel:
    """Check one label against its project and encode its input; raise InvalidInput on the first problem.

    `codecs` caches one InputCodec per project version across a batch. `with_input=False` checks
    everything but the input (a label whose data is still to be fetched; its `encoded` is None)."""
    now = now or datetime.now(UTC)
    if inp.action not in ACTIONS:
        raise InvalidInput(_field(inp, "action"), f"{inp.action!r} is not one of {', '.join(ACTIONS)}")
    project = project_of(inp, catalog, default_project)
    _check_id(inp, "example_id", inp.example_id, required=True)
    _check_id(inp, "annotation_id", inp.annotation_id, required=False)
    updated = _utc(inp.updated_at) or now
    created = _utc(inp.created_at) or updated
    key = record_key(project.name, inp.example_id, inp.annotation_id)
    if inp.action == DELETED:
        return ValidLabel(inp, project, None, updated, created, key)
    _check_id(inp, "annotator", inp.annotator, required=True)
    labels = project.spec.labels
    if inp.label not in labels:
        shown = ", ".join(labels[:30]) + (", …" if len(labels) > 30 else "")
        raise InvalidInput(_field(inp, "label"), f"{inp.label!r} is not a label of project {project.name} ({shown})")
    if not with_input:
        return ValidLabel(inp, project, None, updated, created, key)
    cache = codecs if codecs is not None else {}
    codec = cache.get((project.name, project.version))
    if codec is None:
        codec = cache[(project.name, project.version)] = InputCodec(project.spec.input)
    return ValidLabel(inp, project, _encode(inp, codec), updated, created, key)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

"""RawLabel (gRPC stream item, flywheel.labels.raw event) → LabelInput."""

from __future__ import annotations

import json
from datetime import datetime

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.ingest.errors import InvalidInput
from services.ingest.labels import CREATED, DELETED, UPDATED, LabelInput

ACTIONS = {
    ev.LABEL_ACTION_UNSPECIFIED: CREATED,
    ev.LABEL_ACTION_CREATED: CREATED,
    ev.LABEL_ACTION_UPDATED: UPDATED,
    ev.LABEL_ACTION_DELETED: DELETED,
}
DATA_TYPES = ("", "image/png", "image/jpeg", "image/webp")


def from_raw(raw: ev.RawLabel, source: str, where: str = "") -> LabelInput:
    prefix = f"{where}." if where else ""
    if raw.action not in ACTIONS:
        raise InvalidInput(f"{prefix}action", f"unknown LabelAction {raw.action}")
    if raw.data and raw.content_type not in DATA_TYPES:
        raise InvalidInput(
            f"{prefix}content_type", f"{raw.content_type!r} is not supported; send {', '.join(DATA_TYPES[1:])}"
        )
    row = None
    if raw.row_json:
        try:
            row = json.loads(raw.row_json)
        except ValueError as exc:
            raise InvalidInput(f"{prefix}row_json", f"is not valid JSON: {exc}") from None
    updated: datetime | None = None
    if raw.HasField("meta") and raw.meta.HasField("time") and raw.action != ev.LABEL_ACTION_DELETED:
        try:
            updated = raw.meta.time.ToDatetime()
        except (ValueError, OverflowError) as exc:
            raise InvalidInput(f"{prefix}meta.time", f"is not a valid time: {exc}") from None
    identity = raw.meta.event_id if raw.HasField("meta") else ""
    return LabelInput(
        example_id=raw.example_id,
        label=raw.label,
        annotator=raw.annotator,
        source=source,
        action=ACTIONS[raw.action],
        image=raw.data or None,
        features=list(raw.features) or None,
        row=row,
        text=raw.text or None,
        project=raw.project,
        annotation_id=raw.annotation_id,
        updated_at=updated,
        identity=identity,
        where=where,
        trace_id=raw.meta.trace_id if raw.HasField("meta") else "",
        synthetic=raw.synthetic,
    )

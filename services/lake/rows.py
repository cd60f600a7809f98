"""Events → Arrow rows: one schema per topic, every row carrying its Kafka partition and offset."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp

from services.events.consumer import Record
from services.events.topics import LABELS, PREDICTIONS
from services.genproto.flywheel.v1 import events_pb2 as ev

TS = pa.timestamp("us", tz="UTC")
VECTOR = pa.list_(pa.float32())
_KAFKA = [pa.field("_partition", pa.int32()), pa.field("_offset", pa.int64())]

LABEL_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("example_id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("action", pa.string()),
        pa.field("annotator", pa.string()),
        pa.field("source", pa.string()),
        pa.field("object_uri", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("label_schema_version", pa.int32()),
        pa.field("annotation_id", pa.string()),
        pa.field("features", VECTOR),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("attributes", pa.string()),
        pa.field("project", pa.string()),
        pa.field("content_type", pa.string()),
        *_KAFKA,
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("request_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("input_features", VECTOR),
        pa.field("input_ref", pa.string()),
        pa.field("output_scores", VECTOR),
        pa.field("predicted_label", pa.string()),
        pa.field("predicted_class", pa.int32()),
        pa.field("latency_ms", pa.float64()),
        pa.field("key_id", pa.string()),
        pa.field("route", pa.string()),
        pa.field("example_id", pa.string()),
        pa.field("project", pa.string()),
        *_KAFKA,
    ]
)

_ACTIONS = {
    ev.LABEL_ACTION_UNSPECIFIED: "created",
    ev.LABEL_ACTION_CREATED: "created",
    ev.LABEL_ACTION_UPDATED: "updated",
    ev.LABEL_ACTION_DELETED: "deleted",
}


def micros(ts: Timestamp) -> int | None:
    """A protobuf Timestamp in microseconds since the epoch; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def event_date(record: Record) -> str:
    """The partition date (UTC): the event's own time, else the Kafka timestamp."""
    us = micros(record.event.meta.time)
    # Whole seconds: a float of 9999-12-31T23:59:59.999999 rounds up into year 10000.
    seconds = us // 1_000_000 if us is not None else record.timestamp_ms // 1000
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date().isoformat()


def _label_row(r: Record) -> dict[str, Any]:
    e: ev.LabelEvent = r.event  # type: ignore[assignment]
    return {
        "event_id": e.meta.event_id,
        "event_time": micros(e.meta.time) or r.timestamp_ms * 1000,
        "example_id": e.example_id,
        "label": e.label,
        "action": _ACTIONS.get(e.action, "created"),
        "annotator": e.annotator,
        "source": e.source,
        "object_uri": e.object_uri,
        "sha256": e.sha256,
        "label_schema_version": e.label_schema_version,
        "annotation_id": e.annotation_id,
        "features": list(e.features),
        "created_at": micros(e.created_at),
        "updated_at": micros(e.updated_at),
        "attributes": json.dumps(dict(sorted(e.attributes.items()))) if e.attributes else "",
        "project": e.project,
        "content_type": e.content_type,
        "_partition": r.partition,
        "_offset": r.offset,
    }


def _prediction_row(r: Record) -> dict[str, Any]:
    e: ev.PredictionLog = r.event  # type: ignore[assignment]
    return {
        "event_id": e.meta.event_id,
        "event_time": micros(e.meta.time) or r.timestamp_ms * 1000,
        "request_id": e.request_id,
        "model": e.model,
        "model_version": e.model_version,
        "input_features": list(e.input_features),
        "input_ref": e.input_ref,
        "output_scores": list(e.output_scores),
        "predicted_label": e.predicted_label,
        "predicted_class": e.predicted_class,
        "latency_ms": e.latency_ms,
        "key_id": e.key_id,
        "route": e.route,
        "example_id": e.example_id,
        "project": e.project or e.model,  # a project's model is named after it
        "_partition": r.partition,
        "_offset": r.offset,
    }


SCHEMAS: dict[str, pa.Schema] = {LABELS.name: LABEL_SCHEMA, PREDICTIONS.name: PREDICTION_SCHEMA}
_ROW: dict[str, Callable[[Record], dict[str, Any]]] = {LABELS.name: _label_row, PREDICTIONS.name: _prediction_row}


def to_table(topic: str, records: Sequence[Record]) -> pa.Table:
    """The records of one topic as a table in the topic's schema, ordered by (partition, offset)."""
    rows = [_ROW[topic](r) for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[topic])

"""Known label and prediction events for the lake's tests."""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from services.events import new_meta
from services.events.consumer import Record
from services.events.topics import LABELS, PREDICTIONS
from services.genproto.flywheel.v1 import events_pb2 as ev

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def ts(when: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


def features(label: int, i: int) -> list[float]:
    """64 features whose values depend on the label (so per-class stats are known)."""
    rng = np.random.default_rng(i)
    return [float(v) for v in np.clip(label / 10 + rng.normal(0, 0.01, 64), 0, 1).astype(np.float32)]


def label_event(
    example_id: str,
    label: str,
    *,
    seq: int = 0,
    action: int = ev.LABEL_ACTION_CREATED,
    source: str = "api",
    when: dt.datetime = T0,
    feats: list[float] | None = None,
    project: str = "digits",
) -> ev.LabelEvent:
    meta = new_meta("test")
    meta.event_id = f"{example_id}:{seq}:{action}"
    meta.time.CopyFrom(ts(when))
    return ev.LabelEvent(
        meta=meta,
        example_id=example_id,
        label=label,
        source=source,
        action=action,
        features=feats
        if feats is not None
        else features(int(label) if label.isdigit() else 0, zlib.crc32(example_id.encode())),
        updated_at=ts(when),
        object_uri=f"file:///objects/{example_id}",
        sha256="0" * 64,
        project=project,
        content_type="image/png",
    )


def prediction(
    event_id: str, model: str, version: str, example_id: str, predicted: str, when: dt.datetime = T0
) -> ev.PredictionLog:
    meta = new_meta("gateway")
    meta.event_id = event_id
    meta.time.CopyFrom(ts(when))
    return ev.PredictionLog(
        meta=meta,
        request_id=event_id,
        model=model,
        model_version=version,
        predicted_label=predicted,
        predicted_class=int(predicted),
        example_id=example_id,
        route="production",
        input_features=[0.0] * 64,
        output_scores=[0.1] * 10,
    )


def records(topic: str, events: list, partition: int = 0, start: int = 0) -> list[Record]:
    return [Record(topic, partition, start + i, None, int(T0.timestamp() * 1000), e) for i, e in enumerate(events)]


__all__ = ["LABELS", "PREDICTIONS", "T0", "label_event", "prediction", "records", "ts"]

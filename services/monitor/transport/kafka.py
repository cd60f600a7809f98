"""Kafka adapter: prediction logs, model publications and labels in; DriftAlert and TrainRequest out.

The batch handler publishes every alert and train request of the batch and flushes the
producer before it returns, so the consume loop commits offsets only after they are durable.
Event ids are deterministic, so a replayed batch republishes the same events (harmless).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from google.protobuf.message import DecodeError, Message

from services.events import EventProducer, InvalidEvent, new_meta
from services.events.consumer import Record
from services.events.topics import DRIFT, LABELS, MODELS, PREDICTIONS, TRAIN_REQUESTS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.monitor import metrics
from services.monitor.monitor import Alert, Monitor, Prediction, Retrain

MAX_FEATURES = 65536
SOURCE = "monitor"


def validate_prediction(event: Message, expected_dim: Callable[[str, str], int | None] | None = None) -> None:
    """Reject prediction logs the monitor can never use (dead-lettered with this reason); with
    `expected_dim`, also those whose features do not match what the version was trained on."""
    if not isinstance(event, ev.PredictionLog):
        raise InvalidEvent(f"expected a PredictionLog, got {type(event).__name__}")
    if not event.model or not event.model_version:
        raise InvalidEvent("PredictionLog without model or model_version")
    n = len(event.input_features)
    if n > MAX_FEATURES:
        raise InvalidEvent(f"PredictionLog has {n} input_features; at most {MAX_FEATURES} are tested")
    # NaN is a null (a tabular column); only infinities are malformed.
    if n and any(math.isinf(v) for v in event.input_features):
        raise InvalidEvent("PredictionLog input_features contain infinity")
    if n and expected_dim is not None:
        want = expected_dim(event.model, event.model_version)
        if want is not None and n != want:
            raise InvalidEvent(
                f"PredictionLog has {n} input_features; {event.model} v{event.model_version} takes {want}"
            )


def validators(monitor: Monitor) -> dict[str, Callable[[Message], None]]:
    """The loop's validators, checking feature counts against each version's reference."""
    return {PREDICTIONS.name: lambda event: validate_prediction(event, monitor.expected_dim)}


def event_time(record: Record) -> float:
    meta = record.event.meta  # type: ignore[attr-defined]
    if meta.time.seconds or meta.time.nanos:
        return meta.time.seconds + meta.time.nanos / 1e9
    if record.timestamp_ms > 0:
        return record.timestamp_ms / 1000.0
    return time.time()


def to_prediction(record: Record) -> Prediction | None:
    """The prediction the monitor tests, or None for one it leaves out (counted by reason)."""
    log: ev.PredictionLog = record.event  # type: ignore[assignment]
    if log.synthetic:
        metrics.IGNORED.labels("synthetic").inc()  # a load test is not production traffic
        return None
    if not log.input_features:
        metrics.IGNORED.labels("no_features").inc()  # logged by reference only: nothing to test
        return None
    label = log.predicted_label or str(log.predicted_class)
    return Prediction(
        model=log.model,
        version=log.model_version,
        features=np.asarray(log.input_features, dtype=np.float64),
        predicted_label=label,
        event_time=event_time(record),
        event_id=log.meta.event_id,
        example_id=log.example_id,
        latency_ms=log.latency_ms,
    )


def drift_event(alert: Alert) -> ev.DriftAlert:
    return ev.DriftAlert(
        meta=new_meta(SOURCE, event_id=alert.event_id),
        model=alert.model,
        model_version=alert.version,
        snapshot_id=alert.snapshot_id,
        windows=alert.windows,
        drifted_share=alert.drifted_share,
        sample_count=alert.samples,
        features=[
            ev.FeatureDrift(feature=r.feature, test=r.test, statistic=r.statistic, p_value=r.p_value, drifted=r.drifted)
            for r in alert.results
        ],
    )


def train_event(
    retrain: Retrain, budget_s: float, model_family: str, hyperparameters: dict[str, str] | None = None
) -> ev.TrainRequest:
    return ev.TrainRequest(
        meta=new_meta(SOURCE, event_id=retrain.event_id),
        model=retrain.model,
        snapshot_id="",  # empty: the trainer cuts a fresh snapshot first
        model_family=model_family,
        hyperparameters=hyperparameters or {},
        budget_s=budget_s,
        reason=retrain.reason,
        caused_by=retrain.caused_by,
        model_version=retrain.version,
        drifted_share=retrain.drifted_share,
    )


def read_to_end(
    bootstrap: str, topic_name: str, client: str, timeout_s: float = 30.0, security: dict[str, str] | None = None
) -> list[bytes]:
    """Every value of a (small) topic from its start to its current end, without a group commit."""
    from confluent_kafka import Consumer, TopicPartition

    settings = {"bootstrap.servers": bootstrap, "group.id": client, "enable.auto.commit": False, **(security or {})}
    consumer = Consumer(settings)
    values: list[bytes] = []
    try:
        topic = consumer.list_topics(topic_name, timeout=timeout_s).topics.get(topic_name)
        if topic is None or topic.error is not None:
            return values
        ends: dict[int, int] = {}
        for p in topic.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic_name, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic_name, p, 0) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
                values.append(msg.value() or b"")
        return values
    finally:
        consumer.close()


def restore_state(monitor: Monitor, bootstrap: str, group: str, security: dict[str, str] | None = None) -> None:
    """What a restarted monitor must not forget: which snapshot each published version was trained
    on (flywheel.models; the loop's committed offsets are past those events) and when it sent
    TrainRequests (flywheel.train.requests; the cooldown and budget outlive a restart)."""
    for raw in read_to_end(bootstrap, MODELS.name, f"{group}-restore", security=security):
        published = ev.ModelPublished()
        try:
            published.ParseFromString(raw)
        except DecodeError:
            continue  # the loop dead-letters it
        monitor.model_published(published.model, published.version, published.snapshot_id)
    for raw in read_to_end(bootstrap, TRAIN_REQUESTS.name, f"{group}-restore", security=security):
        req = ev.TrainRequest()
        try:
            req.ParseFromString(raw)
        except DecodeError:
            continue
        if req.meta.source == SOURCE and req.model:
            # A request from before drifted_share was recorded counts as a full drift: nothing escalates past it.
            monitor.policy.seed(
                req.model,
                req.model_version,
                req.meta.time.seconds + req.meta.time.nanos / 1e9,
                req.drifted_share or 1.0,
            )


class MonitorHandler:
    """The ConsumeLoop's batch handler."""

    topics = [MODELS.name, PREDICTIONS.name, LABELS.name]

    def __init__(
        self,
        monitor: Monitor,
        producer: EventProducer,
        budget_s: float,
        model_family: str,
        hyperparameters: dict[str, str] | None = None,
    ) -> None:
        self._monitor = monitor
        self._producer = producer
        self._budget_s = budget_s
        self._family = model_family
        self._hyperparameters = hyperparameters or {}

    def __call__(self, records: list[Record]) -> None:
        predictions: list[Prediction] = []
        for r in records:
            if r.topic == MODELS.name:
                m: ev.ModelPublished = r.event  # type: ignore[assignment]
                self._monitor.model_published(m.model, m.version, m.snapshot_id)
            elif r.topic == PREDICTIONS.name:
                p = to_prediction(r)
                if p is not None:
                    predictions.append(p)
            elif r.topic == LABELS.name:
                label: ev.LabelEvent = r.event  # type: ignore[assignment]
                if label.example_id and label.label and not label.synthetic:
                    self._monitor.label(label.example_id, label.label)
        _, alerts, retrains = self._monitor.observe(predictions)
        for alert in alerts:
            self._producer.send(DRIFT.name, drift_event(alert))
        for retrain in retrains:
            self._producer.send(
                TRAIN_REQUESTS.name, train_event(retrain, self._budget_s, self._family, self._hyperparameters)
            )
        if alerts or retrains:
            self._producer.flush()

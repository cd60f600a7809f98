"""Prediction logs → `flywheel.predictions` through a bounded queue that never blocks a prediction.

`submit` is called on the request path and only appends to a bounded deque: a full one drops
the entry and counts it. One worker thread turns entries into `PredictionLog` events and hands them to the
idempotent producer; the broker's acknowledgement counts `logged`, a refusal counts `failed`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaError, Message
from google.protobuf.message import Message as ProtoMessage

from services.events import EventProducer
from services.events.codec import encode, new_meta
from services.events.topics import PREDICTIONS
from services.gateway.metrics import LOG_QUEUE, PREDICTION_LOGS
from services.genproto.flywheel.v1 import events_pb2 as ev

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogEntry:
    request_id: str
    model: str
    version: str
    features: np.ndarray | None  # one row, or None when too large / not numeric
    scores: np.ndarray | None
    labels: tuple[str, ...]
    latency_ms: float
    key_id: str
    route: str
    example_id: str = ""
    synthetic: bool = False


class CountingProducer(EventProducer):
    """The shared producer, with each acknowledgement or refusal counted as a prediction-log outcome."""

    def _count(self, err: KafkaError | None, msg: Message) -> None:
        super()._count(err, msg)
        if msg.topic() == PREDICTIONS.name:
            PREDICTION_LOGS.labels("logged" if err is None else "failed").inc()

    def send_batch(self, topic: str, events: list[tuple[bytes, ProtoMessage]]) -> None:
        """Queue (key, event) pairs and serve delivery reports once, not once per event."""
        for key, event in events:
            while True:
                try:
                    self._producer.produce(topic, value=encode(event), key=key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)  # the client's queue is full: wait for room (off the request path)
        self._producer.poll(0)

    def serve_reports(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports (acknowledgements) while no new event is being sent."""
        self._producer.poll(timeout_s)


def to_event(entry: LogEntry) -> ev.PredictionLog:
    event = ev.PredictionLog(
        meta=new_meta("gateway", trace_id=entry.request_id),
        request_id=entry.request_id,
        model=entry.model,
        model_version=entry.version,
        latency_ms=entry.latency_ms,
        key_id=entry.key_id,
        route=entry.route,
        example_id=entry.example_id,
        synthetic=entry.synthetic,
    )
    if entry.features is not None:
        event.input_features.extend(entry.features.astype(np.float32).ravel().tolist())
    if entry.scores is not None and entry.scores.size:
        scores = entry.scores.astype(np.float32).ravel()
        event.output_scores.extend(scores.tolist())
        k = int(np.argmax(scores))
        event.predicted_class = k
        event.predicted_label = entry.labels[k] if k < len(entry.labels) else str(k)
    return event


class PredictionLogger:
    """Entries wait in a bounded deque; one worker wakes every `interval_s` and sends what is there.

    The request path only appends under a lock (no thread wake-up per prediction), so logging
    costs a prediction a few microseconds; the worker's batches keep it off the event loop's back.
    """

    def __init__(self, producer: EventProducer | None, bound: int, interval_s: float = 0.01) -> None:
        self._producer = producer
        self._bound = bound
        self._entries: deque[LogEntry] = deque()
        self._lock = threading.Lock()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._producer is None:
            return
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, entry: LogEntry) -> None:
        """Never blocks: a full queue drops the entry and counts it (no Kafka: nothing is logged)."""
        if self._producer is None:
            return
        with self._lock:
            if len(self._entries) < self._bound:
                self._entries.append(entry)
                return
            self.dropped += 1
        PREDICTION_LOGS.labels("dropped").inc()

    def pending(self) -> int:
        return len(self._entries)

    def _take(self) -> list[LogEntry]:
        with self._lock:
            batch = list(self._entries)
            self._entries.clear()
        return batch

    def _run(self) -> None:
        producer = self._producer
        if producer is None:  # start() runs no worker without a producer
            return
        while True:
            stopping = self._stop.wait(self._interval_s)
            batch = self._take()
            LOG_QUEUE.set(len(batch))
            if batch:
                self._send(producer, batch)
            if isinstance(producer, CountingProducer):
                producer.serve_reports(0)
            if stopping and not self._entries:
                return

    def _send(self, producer: EventProducer, batch: list[LogEntry]) -> None:
        events: list[tuple[bytes, ProtoMessage]] = []
        for entry in batch:
            try:
                events.append((entry.model.encode(), to_event(entry)))
            except (ValueError, TypeError):  # one malformed entry must not stop logging; it is counted
                PREDICTION_LOGS.labels("failed").inc()
                log.exception("prediction log not built", extra={"model": entry.model})
        if isinstance(producer, CountingProducer):
            producer.send_batch(PREDICTIONS.name, events)
            return
        for key, event in events:
            producer.send(PREDICTIONS.name, event, key=key)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued, then wait for the broker's acknowledgements."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._producer is not None:
            try:
                self._producer.flush(timeout_s)
            except Exception as exc:  # noqa: BLE001 - on shutdown, report and exit
                log.warning("prediction logs not all acknowledged", extra={"error": str(exc)})

"""Kafka adapter: consume `flywheel.labels.raw` with the shared at-least-once ConsumeLoop.

Invalid raw labels (schema, unknown label, undecodable image) are refused by the validator the
loop runs while decoding, so they reach `flywheel.deadletter` with the reason; a delete of an
unknown annotation is parked the same way.  The batch handler returns only after the SQL commit
and the broker's acks on `flywheel.labels`, so the loop's commit follows a durable write.
"""

from __future__ import annotations

import threading
import time

from google.protobuf.message import Message

from services.events import ConsumeLoop, ConsumerConfig, EventProducer, InvalidEvent
from services.events.consumer import Record, invalid_in_context
from services.events.topics import LABELS_RAW
from services.ingest.errors import InvalidInput, UnknownAnnotation
from services.ingest.labels import ValidLabel
from services.ingest.metrics import REJECTED, STAGE_CPU, STAGE_SECONDS
from services.ingest.pipeline import IngestPipeline
from services.ingest.transport.raw_codec import from_raw

SOURCE = "kafka"


def build_consume_loop(
    pipeline: IngestPipeline,
    bootstrap: str,
    group: str,
    producer: EventProducer,
    stop: threading.Event,
    max_batch: int = 1000,
    security: dict[str, str] | None = None,
) -> ConsumeLoop:
    # The loop validates each event while decoding (so a bad one is dead-lettered with its
    # reason); the handler reuses that result instead of decoding the image twice. Entries are
    # keyed by the message object, alive in its Record for the whole batch.
    validated: dict[int, ValidLabel] = {}
    # Per-message timing would cost more than the check (reading a thread's CPU clock is a
    # system call here): wall time is summed per message, CPU time taken once per batch, from
    # the first check to the handler (so it includes the protobuf decode of the batch).
    timing = {"wall": 0.0, "cpu_from": -1.0}

    def check(message: Message) -> None:
        if timing["cpu_from"] < 0:
            timing["cpu_from"] = time.thread_time()
        started = time.perf_counter()
        try:
            validated[id(message)] = pipeline.validate_one(from_raw(message, SOURCE))  # type: ignore[arg-type]
        except InvalidInput as exc:
            REJECTED.labels(SOURCE).inc()
            raise InvalidEvent(str(exc)) from None
        finally:
            timing["wall"] += time.perf_counter() - started

    def handle(records: list[Record]) -> None:
        if timing["cpu_from"] >= 0:
            STAGE_CPU.labels("validate").inc(time.thread_time() - timing["cpu_from"])
            STAGE_SECONDS.labels("validate").observe(timing["wall"])
            timing.update(wall=0.0, cpu_from=-1.0)
        try:
            valid = [
                validated.get(id(r.event)) or pipeline.validate([from_raw(r.event, SOURCE)])[0]  # type: ignore[arg-type]
                for r in records
            ]
        finally:
            validated.clear()
        try:
            pipeline.submit_valid(valid)
        except UnknownAnnotation as exc:
            raise invalid_in_context(records[getattr(exc, "index", 0)], str(exc)) from None

    config = ConsumerConfig(
        bootstrap=bootstrap,
        group=group,
        topics=[LABELS_RAW.name],
        max_batch=max_batch,
        validators={LABELS_RAW.name: check},
        extra=dict(security or {}),
    )
    return ConsumeLoop(config, handle, producer, stop)

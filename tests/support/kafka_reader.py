"""Read events back from a topic in tests (a plain consumer, no group commits)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer


def read_topic(bootstrap: str, topic: str, want: int, timeout_s: float = 30.0, stop_when=None, config=None) -> list:
    """Return up to `want` messages from the start of `topic` (raw confluent Message objects); `config`: more
    client settings (SASL)."""
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    out.append(msg)
            if stop_when is not None and stop_when(out):
                break
    finally:
        consumer.close()
    return out

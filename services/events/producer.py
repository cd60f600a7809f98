"""An idempotent, acks=all producer of Flywheel events.

confluent-kafka (librdkafka) is the client: see bench/kafka for the measured comparison with
kafka-python.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from google.protobuf.message import Message as ProtoMessage

from services.events.codec import encode, key_of
from services.events.metrics import PRODUCE_ERRORS, PRODUCED

MAX_KEPT_ERRORS = 100  # refusals kept per flush (a flush names the first few): a bound, not a count


class ProduceFailed(RuntimeError):
    """The broker did not acknowledge an event (after the client's own retries)."""


class _InFlight:
    """One thread's events since its last flush: how many await a report, and the refusals."""

    __slots__ = ("errors", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.errors: list[str] = []


def _keep(errors: list[str], error: str) -> None:
    if len(errors) < MAX_KEPT_ERRORS:
        errors.append(error)


class EventProducer:
    def __init__(self, bootstrap: str, client_id: str = "flywheel", **overrides: Any) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 30000,
        }
        config.update(overrides)
        self._config = config
        self._producer = Producer(config)
        self._errors: list[str] = []  # refusals of events sent outside `send` (send_raw, subclasses)
        self._lock = threading.Lock()
        # Each thread's events in flight since its last flush: a flush reports its own thread's refusals
        # only. One shared list let a concurrent flush take another's refusal, and the other then held
        # its unsent events for acknowledged (ingest: a label request's flush beside the outbox relay's).
        self._local = threading.local()

    def _count(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            PRODUCED.labels(msg.topic()).inc()
        else:
            PRODUCE_ERRORS.labels(msg.topic()).inc()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """The report of an event sent outside `send`: its refusal goes to whichever flush comes next."""
        self._count(err, msg)
        if err is not None:
            with self._lock:
                _keep(self._errors, f"{msg.topic()}: {err.str()}")

    def _in_flight(self) -> _InFlight:
        mine: _InFlight | None = getattr(self._local, "in_flight", None)
        if mine is None:
            mine = self._local.in_flight = _InFlight()
        return mine

    def _reporter(self, mine: _InFlight) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, msg: Message) -> None:
            self._count(err, msg)
            with self._lock:
                mine.pending -= 1
                if err is not None:
                    _keep(mine.errors, f"{msg.topic()}: {err.str()}")

        return report

    def send(
        self,
        topic: str,
        event: ProtoMessage,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue an event; call flush() to wait until the broker has it."""
        payload = encode(event)
        mine = self._in_flight()
        report = self._reporter(mine)  # once, not again on each retry of a full queue
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=payload,
                    key=key if key is not None else key_of(topic, event),
                    headers=list((headers or {}).items()),
                    on_delivery=report,
                )
                with self._lock:
                    mine.pending += 1
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room (back-pressure).
                self._producer.poll(0.1)
            except KafkaException as exc:
                # Refused before queueing (seen: "Unknown partition" from a broker just replaced, its
                # topics not created yet): the caller's to retry, like an unacknowledged send.
                PRODUCE_ERRORS.labels(topic).inc()
                raise ProduceFailed(f"{topic}: {exc.args[0].str() if exc.args else exc}") from exc
        self._producer.poll(0)

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Send bytes as they are (tests and the load generator's malformed events)."""
        self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for the acknowledgement of every event this thread sent since its last flush; raise
        ProduceFailed if one was refused or not acknowledged in time (it then counts as not sent)."""
        deadline = time.monotonic() + timeout_s
        mine = self._in_flight()
        self._local.in_flight = _InFlight()  # what this thread sends from now on is the next flush's
        self._producer.flush(timeout_s)
        # librdkafka's queue is empty, but another thread's flush may still be running our reports.
        while mine.pending > 0 and time.monotonic() < deadline:
            self._producer.poll(0.01)
        with self._lock:
            errors = mine.errors + self._errors
            self._errors = []
            remaining = mine.pending
        if remaining > 0:
            errors.append(f"{remaining} events not acknowledged within {timeout_s}s")
        if errors:
            raise ProduceFailed("; ".join(errors[:5]))

    def cluster_id(self, timeout_s: float = 5.0) -> str:
        """The broker cluster's id: a broker on memory storage gets a new one at each start."""
        return self._producer.list_topics(timeout=timeout_s).cluster_id or ""

    def renew(self) -> None:
        """A new client on the same settings, for a broker cluster that changed (a new cluster id): the old
        client's idempotence state (producer id, sequence numbers) means nothing there, and a broker may
        never acknowledge it (measured: Tansu timed out every send; a new client is answered at once).
        Events still queued on the old client get a second to go, then count as failed."""
        old, self._producer = self._producer, Producer(self._config)
        old.flush(1.0)

    def pending(self) -> int:
        return len(self._producer)

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)

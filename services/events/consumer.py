"""The at-least-once consume loop: poll a batch, decode, handle, make durable, then commit.

* Offsets are committed only after the batch handler returned, i.e. after its write is
  durable; a crash anywhere before that replays the batch, so handlers must be idempotent.
* Undecodable or invalid events go to `flywheel.deadletter` with the reason and their original
  bytes (and that send is acknowledged before the commit): bad input never stops the loop.
* A handler failure is our own outage, never dead-lettered: the batch is rewound and retried
  with back-off until it succeeds or the loop is stopped. So is a dead-letter topic that does
  not acknowledge: the letters are sent again until it does, and nothing is committed before.
* A broker back on an empty log (a new cluster id: a Kafka pod on an emptyDir, Tansu on memory) is
  noticed at the next batch: the batch is dropped (its records came from, or sit at positions of,
  the old log) and the consumer is renewed, so it starts again from the new broker's committed
  offsets, not from positions in a log that is gone (those would skip the new log's first records).
  What the old broker held and lost is the producers' to send again (ingest's outbox does).
* Readiness tells the truth: `healthy()` is false while the handler, the dead-letter topic or the
  broker's metadata has been failing for longer than `stall_after_s`, and once the loop has died.
  A broker that could not be asked is asked again while the topics are idle too: a quiet topic
  must not leave the service unready after the broker is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message

from services.events.codec import InvalidEvent, Validator, decode, new_meta
from services.events.metrics import CONSUMED, DEAD_LETTERED, FAILED, HANDLED, LAG
from services.events.producer import EventProducer, ProduceFailed
from services.events.topics import DEADLETTER
from services.genproto.flywheel.v1 import events_pb2 as ev

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """A decoded event with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    event: Message
    # The cluster id of the broker it came from (ConsumerConfig.tag_log): offsets only mean
    # something within one log, and a broker on memory storage starts a new log when restarted.
    log: str = ""


BatchHandler = Callable[[list[Record]], None]


@dataclass
class ConsumerConfig:
    bootstrap: str
    group: str
    topics: list[str]
    max_batch: int = 1000
    poll_timeout_s: float = 0.5
    # Tansu needs short sessions: a group join waits half the session timeout.
    session_timeout_ms: int = 6000
    heartbeat_ms: int = 1000
    auto_offset_reset: str = "earliest"
    retry_backoff_s: float = 0.5
    stall_after_s: float = 10.0  # failing this long makes the loop unhealthy (readiness reports it)
    # Decode-time checks per topic: pure functions of the event (no I/O), raising InvalidEvent.
    validators: dict[str, Validator] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    # Tag each record with the broker's cluster id (every batch asks for it anyway, see _process):
    # for consumers that remember offsets themselves, like the lake's manifest.
    tag_log: bool = False


def _on_commit(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """Served by consume(): a refused commit is logged (the next batch's commit covers these offsets too)."""
    if err is not None:
        log.warning("offset commit failed; the next commit covers it", extra={"error": err.str()})


class ConsumeLoop:
    def __init__(
        self,
        config: ConsumerConfig,
        handler: BatchHandler,
        deadletter: EventProducer,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self._handler = handler
        self._dlq = deadletter
        self._stop = stop
        self.assigned = threading.Event()
        self.last_poll = 0.0
        self._failing_since: float | None = None
        self._failure = ""
        self._broker_unknown = False  # the last metadata request failed: asked again until it answers
        self._died = ""
        settings: dict[str, object] = {
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": config.auto_offset_reset,
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": config.heartbeat_ms,
            "enable.partition.eof": False,
            "on_commit": _on_commit,
        }
        settings.update(config.extra)
        self._settings = settings
        self._consumer = Consumer(settings)
        self._log: str = ""  # the cluster id of the broker log the consumer's positions are in
        self.renewals = 0  # times the consumer was renewed for a new broker log

    # -- public -----------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until the stop event is set; the last batch is finished and committed."""
        self._subscribe()
        lag_every, last_lag = 5.0, 0.0
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(self.config.max_batch, self.config.poll_timeout_s)
                self.last_poll = time.monotonic()
                if messages:
                    self._process(messages)
                elif self._broker_unknown:
                    self._ask_again()
                if time.monotonic() - last_lag > lag_every:
                    self._export_lag()
                    last_lag = time.monotonic()
        except BaseException as exc:
            self._died = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._consumer.close()

    def healthy(self) -> tuple[bool, str]:
        if self._died:
            return False, f"consume loop stopped: {self._died}"
        if not self.assigned.is_set():
            return False, "waiting for partition assignment"
        since = self._failing_since
        if since is not None and time.monotonic() - since > self.config.stall_after_s:
            return False, f"stalled for {time.monotonic() - since:.0f} s: {self._failure}"
        return True, "ok"

    def _failing(self, reason: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._failure = reason

    def _recovered(self) -> None:
        self._failing_since = None
        self._failure = ""

    # -- internals --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Logged with the revokes: a consumer that polls with lag and consumes nothing is told apart
        # from one holding no partitions only by its last assignment.
        log.info("partitions assigned", extra={"group": self.config.group, "partitions": _names(partitions)})
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"group": self.config.group, "partitions": _names(partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost (the group moved on without this member)",
            extra={"group": self.config.group, "partitions": _names(partitions)},
        )

    def _process(self, messages: list[KafkaMessage]) -> None:
        group = self.config.group
        records: list[Record] = []
        letters: list[ev.DeadLetter] = []
        current = self._broker_log()
        if current is None:  # broker unreachable: which log these positions are in is unknown
            self._rewind(messages)
            self._stop.wait(self.config.retry_backoff_s)
            return
        if self._log and current != self._log:
            log.warning(
                "new broker log (cluster id changed): batch dropped, the new log is read from its committed offsets",
                extra={"before": self._log, "now": current, "group": group},
            )
            self._log = current
            self._renew()
            return
        self._log = current
        log_id = current if self.config.tag_log else ""
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                log.warning("poll error", extra={"error": err.str()})
                continue
            topic = msg.topic()
            CONSUMED.labels(topic, group).inc()
            try:
                event = decode(topic, msg.value(), self.config.validators.get(topic))
            except InvalidEvent as exc:
                letters.append(self._dead_letter(msg, str(exc)))
                continue
            except Exception as exc:  # a validator is a pure check of this event: what it cannot take is the event
                log.exception("validator failed on an event; dead-lettering it", extra={"topic": topic})
                letters.append(self._dead_letter(msg, f"the event could not be validated: {type(exc).__name__}: {exc}"))
                continue
            ts = msg.timestamp()[1]
            records.append(Record(topic, msg.partition(), msg.offset(), msg.key(), ts, event, log_id))
        if letters and not self._park(letters):  # durable before the offsets move past them
            return  # stopping: no commit, the batch replays next time
        records = self._handle_with_retry(records)
        if records is None:
            return  # stopping with an unhandled batch: no commit, it replays next time
        for r in records:
            HANDLED.labels(r.topic, group).inc()
        self._commit(messages)

    def _ask_again(self) -> None:
        """No batch, but the broker could not be asked last time: ask now (readiness clears when it
        answers). A new log is acted on at its first batch, as always: renewing a consumer that is
        still joining the new broker's group leaves a member behind that Tansu waits for."""
        if self._broker_log() is None:
            self._stop.wait(self.config.retry_backoff_s)

    def _broker_log(self) -> str | None:
        """The broker's cluster id ("" when it reports none), None while it cannot be asked."""
        try:
            # One topic's metadata, not every topic's: the cluster id comes with any answer.
            current = self._consumer.list_topics(self.config.topics[0], timeout=10).cluster_id or ""
        except Exception as exc:  # noqa: BLE001 - a broker away is retried, never fatal to the loop
            self._broker_unknown = True
            self._failing(f"broker metadata unavailable: {exc}")
            log.warning("broker metadata unavailable; asked again after a back-off", extra={"error": str(exc)})
            return None
        if self._broker_unknown:
            # Only this failure can be pending here: handler and dead-letter failures are retried
            # inside the batch that met them, never across batches.
            self._broker_unknown = False
            self._recovered()
        return current

    def _rewind(self, messages: list[KafkaMessage]) -> None:
        """Seek each partition back to the batch's first offset, so the batch is fetched again."""
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error() is None:
                key = (m.topic(), m.partition())
                first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # noqa: BLE001 - not assigned any more: the rebalance reset it
                log.debug("seek failed", extra={"error": str(exc)})

    def _renew(self) -> None:
        """Close the consumer and start a new one: no positions carried over from the old log."""
        try:
            self._consumer.close()
        except Exception as exc:  # noqa: BLE001 - the old group member may be unknown to the new broker
            log.debug("closing the old consumer failed", extra={"error": str(exc)})
        self._consumer = Consumer(self._settings)
        self._subscribe()
        self.renewals += 1

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            self.config.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _handle_with_retry(self, records: list[Record]) -> list[Record] | None:
        """Run the handler until it succeeds; return the records it handled, None if stopped."""
        while records:
            try:
                self._handler(records)
                self._recovered()
                return records
            except InvalidEvent as exc:
                # Invalid only in context (an unknown label, say): park that one record, go on.
                bad = getattr(exc, "record", None)
                if bad is None:
                    raise
                if not self._park([self._dead_letter_record(bad, str(exc))]):
                    return None
                records = [r for r in records if r is not bad]
            except Exception as exc:
                FAILED.labels(records[0].topic, self.config.group).inc()
                self._failing(f"handler failed: {type(exc).__name__}: {exc}")
                log.exception("handler failed; retrying the batch", extra={"records": len(records)})
                if self._stop.wait(self.config.retry_backoff_s):
                    return None
        return records

    def _park(self, letters: list[ev.DeadLetter]) -> bool:
        """Send the letters until the dead-letter topic acknowledges them all; False if stopped first.

        A refused flush loses what it held from the producer's queue: each attempt sends every letter
        again (a letter twice in the topic is harmless; one lost is not)."""
        while True:
            for letter in letters:
                self._dlq.send(DEADLETTER.name, letter, key=letter.original_topic.encode())
            try:
                self._dlq.flush()
                self._recovered()
                return True
            except ProduceFailed as exc:
                self._failing(f"dead-letter topic not acknowledging: {exc}")
                log.error("dead letters not acknowledged; sending them again", extra={"error": str(exc)})
                if self._stop.wait(self.config.retry_backoff_s):
                    return False

    def _commit(self, messages: list[KafkaMessage]) -> None:
        latest: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error() is None:
                latest[(m.topic(), m.partition())] = max(latest.get((m.topic(), m.partition()), -1), m.offset())
        if latest:
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in latest.items()]
            # Asynchronous: a synchronous commit can block for good in librdkafka while the group
            # coordinator is away (seen: the lake stuck > 180 s in commit after a broker restart). The
            # batch is handled already; a commit that never lands only replays it after a restart, the
            # same at-least-once as a crash before the commit. close() waits for commits in flight.
            self._consumer.commit(offsets=offsets, asynchronous=True)

    def _dead_letter(self, msg: KafkaMessage, reason: str) -> ev.DeadLetter:
        DEAD_LETTERED.labels(msg.topic(), self.config.group).inc()
        headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
        letter = ev.DeadLetter(
            meta=new_meta(self.config.group),
            original_topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key() or b"",
            value=msg.value() or b"",
            reason=reason,
            consumer_group=self.config.group,
            headers=headers,
        )
        log.warning("dead-lettered", extra={"topic": msg.topic(), "offset": msg.offset(), "reason": reason})
        return letter

    def _dead_letter_record(self, record: Record, reason: str) -> ev.DeadLetter:
        DEAD_LETTERED.labels(record.topic, self.config.group).inc()
        letter = ev.DeadLetter(
            meta=new_meta(self.config.group),
            original_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key or b"",
            value=record.event.SerializeToString(),
            reason=reason,
            consumer_group=self.config.group,
        )
        log.warning("dead-lettered", extra={"topic": record.topic, "offset": record.offset, "reason": reason})
        return letter

    def _export_lag(self) -> None:
        try:
            assignment = self._consumer.assignment()
            if not assignment:
                return
            committed = self._consumer.committed(assignment, timeout=2)
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                position = tp.offset if tp.offset != OFFSET_INVALID else low
                LAG.labels(tp.topic, str(tp.partition), self.config.group).set(max(0, high - position))
        except Exception as exc:  # noqa: BLE001 - lag is best-effort telemetry, never fatal
            log.debug("lag export failed", extra={"error": str(exc)})


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def invalid_in_context(record: Record, reason: str) -> InvalidEvent:
    """Build the InvalidEvent a batch handler raises to dead-letter one record of its batch."""
    exc = InvalidEvent(reason)
    exc.record = record  # type: ignore[attr-defined]
    return exc

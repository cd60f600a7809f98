"""Events over a real broker (Tansu and Apache Kafka): round trip, dead letters, metrics."""

from __future__ import annotations

import threading
import uuid

from prometheus_client import REGISTRY

from services.devstack.brokers import Broker
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, InvalidEvent, decode, new_meta
from services.events.consumer import Record, invalid_in_context
from services.events.topics import DEADLETTER, LABELS, MODELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_until


def _run_loop(
    kafka: Broker, group: str, topics: list[str], handler
) -> tuple[ConsumeLoop, threading.Event, threading.Thread]:
    stop = threading.Event()
    loop = ConsumeLoop(ConsumerConfig(kafka.bootstrap, group, topics), handler, EventProducer(kafka.bootstrap), stop)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return loop, stop, thread


def test_round_trip_preserves_every_field(kafka: Broker, group_id: str) -> None:
    producer = EventProducer(kafka.bootstrap)
    run = uuid.uuid4().hex[:8]
    sent = {}
    for i in range(50):
        event = ev.LabelEvent(
            meta=new_meta("test"), example_id=f"{run}-{i}", label=str(i % 10), features=[float(i), 0.5], source="api"
        )
        sent[event.meta.event_id] = event
        producer.send(LABELS.name, event)
    published = ev.ModelPublished(meta=new_meta("test"), model=f"digits-{run}", version="3", metrics={"accuracy": 0.97})
    producer.send(MODELS.name, published)
    producer.flush()

    received: dict[str, Record] = {}
    lock = threading.Lock()

    def handle(records: list[Record]) -> None:
        with lock:
            for r in records:
                received[r.event.meta.event_id] = r

    _, stop, thread = _run_loop(kafka, group_id, [LABELS.name, MODELS.name], handle)
    try:
        wait_until(lambda: set(sent) | {published.meta.event_id} <= set(received), 60, message="all events")
    finally:
        stop.set()
        thread.join(30)
    for event_id, event in sent.items():
        got = received[event_id]
        assert got.event == event
        assert got.key == event.example_id.encode()  # keyed by example id: order per example
    assert received[published.meta.event_id].event.metrics["accuracy"] == 0.97


def test_bad_payloads_go_to_dead_letter_with_reason(kafka: Broker, group_id: str) -> None:
    producer = EventProducer(kafka.bootstrap)
    marker = uuid.uuid4().hex.encode()
    producer.send_raw(LABELS.name, b"\xff\xfe not a protobuf " + marker, key=marker)
    producer.send_raw(LABELS.name, ev.LabelEvent(example_id="no-meta").SerializeToString(), key=marker)
    good = ev.LabelEvent(meta=new_meta("test"), example_id=marker.decode(), label="3")
    context_bad = ev.LabelEvent(meta=new_meta("test"), example_id=marker.decode(), label="not-a-digit")
    producer.send(LABELS.name, good)
    producer.send(LABELS.name, context_bad)
    producer.flush()

    handled: list[str] = []

    def handle(records: list[Record]) -> None:
        for r in records:
            if r.event.label == "not-a-digit":
                raise invalid_in_context(r, "unknown label 'not-a-digit'; expected one of 0-9")
        handled.extend(r.event.meta.event_id for r in records)

    _, stop, thread = _run_loop(kafka, group_id, [LABELS.name], handle)
    try:
        wait_until(lambda: good.meta.event_id in handled, 60, message="good event handled")

        def mine(msgs: list) -> list[ev.DeadLetter]:
            letters = [decode(DEADLETTER.name, m.value()) for m in msgs]
            return [x for x in letters if marker in x.key or marker.decode() in x.value.decode(errors="ignore")]

        def three_letters() -> list[ev.DeadLetter]:
            found = mine(read_topic(kafka.bootstrap, DEADLETTER.name, 10_000, timeout_s=5))
            return found if len(found) >= 3 else []

        letters = wait_until(three_letters, 60, message="three dead letters")
    finally:
        stop.set()
        thread.join(30)
    reasons = sorted(letter.reason for letter in letters)
    assert any("not a flywheel.v1.LabelEvent protobuf" in r or "without meta.event_id" in r for r in reasons)
    assert any("without meta.event_id" in r for r in reasons)
    assert any("unknown label 'not-a-digit'" in r for r in reasons)
    raw = next(x for x in letters if x.value.startswith(b"\xff\xfe"))
    assert raw.original_topic == LABELS.name and raw.value.endswith(marker)  # original bytes kept whole
    assert context_bad.meta.event_id not in handled
    dead = REGISTRY.get_sample_value("flywheel_events_dead_lettered_total", {"topic": LABELS.name, "group": group_id})
    assert dead == 3


def test_decode_rejects_garbage_with_reason() -> None:
    for payload, expected in [
        (None, "tombstone"),
        (ev.LabelEvent(example_id="x").SerializeToString(), "without meta.event_id"),
    ]:
        try:
            decode(LABELS.name, payload)
        except InvalidEvent as exc:
            assert expected in str(exc)
        else:
            raise AssertionError("garbage decoded")

"""Finding 5's second half, on the consume loop every service runs (services/events/consumer.py) with real brokers:
a dead-letter topic that does not acknowledge used to kill the consumer thread for good, with readiness
still green. Now the letters are sent again until they are acknowledged, nothing is committed before,
and readiness says the loop is stalled meanwhile.

Two Tansu brokers: the events come from one, the dead letters go to the other, which is down while the
poison event arrives and comes back later (on the same port, as a restarted broker would).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from services.devstack.brokers import start_tansu
from services.devstack.ports import free_port
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, ensure_topics
from services.events.consumer import Record
from services.events.topics import DEADLETTER, LABELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.lake.events import label_event
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_until


def test_f05_an_unacknowledged_dead_letter_is_sent_again_not_fatal(tmp_path: Path) -> None:
    source = start_tansu(tmp_path / "source")
    ensure_topics(source.bootstrap)
    dlq_port = free_port()
    dead = start_tansu(tmp_path / "dlq", port=dlq_port)
    ensure_topics(dead.bootstrap)
    dead.stop()  # the dead-letter topic is unreachable when the poison event comes
    handled: list[Record] = []
    stop = threading.Event()
    letters = EventProducer(dead.bootstrap, client_id="dlq", **{"message.timeout.ms": 1500})
    config = ConsumerConfig(
        source.bootstrap, f"g-{uuid.uuid4().hex[:6]}", [LABELS.name], retry_backoff_s=0.2, stall_after_s=1.0
    )
    loop = ConsumeLoop(config, handled.extend, letters, stop)
    thread = threading.Thread(target=loop.run)
    thread.start()
    revived = None
    try:
        producer = EventProducer(source.bootstrap, client_id="t")
        producer.send_raw(LABELS.name, b"\x08not a protobuf LabelEvent", key=b"poison")
        producer.send(LABELS.name, label_event("after-the-poison", "1"))
        producer.flush()
        wait_until(lambda: "dead-letter" in loop.healthy()[1], 60, message="the loop reports the stalled dead letters")
        assert thread.is_alive() and not loop.healthy()[0] and not handled
        revived = start_tansu(tmp_path / "dlq2", port=dlq_port)
        ensure_topics(revived.bootstrap)
        wait_until(lambda: handled and loop.healthy()[0], 90, message="letters acknowledged, the batch handled")
        assert [r.event.example_id for r in handled] == ["after-the-poison"]
        parked = read_topic(revived.bootstrap, DEADLETTER.name, want=1, timeout_s=30)
        assert parked and ev.DeadLetter.FromString(parked[0].value()).value.startswith(b"\x08not a protobuf")
    finally:
        stop.set()
        thread.join(30)
        source.stop()
        if revived is not None:
            revived.stop()
    assert not thread.is_alive()

"""A flush reports the refusals of its own thread's events, not another thread's.

Ingest's label requests and its outbox relay share one producer and flush it at the same time. With one
shared list of refusals, the first flush to finish took them all: the relay could raise for a request's
refused events while the request, finding nothing, held them for acknowledged and never sent them again.

The refusal here is a real librdkafka client's, for a broker address nobody listens on (every event
times out after `message.timeout.ms`); where no broker answers at all, no broker needs to run.
"""

from __future__ import annotations

import threading

import pytest

from services.devstack.ports import free_port
from services.events import EventProducer
from services.events.producer import ProduceFailed
from services.events.topics import LABELS
from services.genproto.flywheel.v1 import events_pb2 as ev


def _unreachable_producer() -> EventProducer:
    return EventProducer(f"127.0.0.1:{free_port()}", client_id="tests-flush", **{"message.timeout.ms": 500})


def _label(n: int) -> ev.LabelEvent:
    return ev.LabelEvent(example_id=f"flush-{n}", label="1")


def _in_thread(fn) -> BaseException | None:
    """Run `fn` in a thread of its own; what it raised, if anything."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive()
    return raised[0] if raised else None


def test_a_refusal_reaches_the_thread_that_sent_the_event_even_when_another_flushes_first() -> None:
    producer = _unreachable_producer()
    producer.send(LABELS.name, _label(1))
    # Another thread (the relay, say) flushes first: the queue empties as the event times out there.
    assert _in_thread(lambda: producer.flush(5)) is None, "a flush raised for an event its thread never sent"
    with pytest.raises(ProduceFailed, match=r"flywheel\.labels"):
        producer.flush(5)  # the sender's own flush must say the event was not acknowledged


def test_each_of_two_senders_hears_of_its_own_refusals_once() -> None:
    producer = _unreachable_producer()
    producer.send(LABELS.name, _label(1))
    other = _in_thread(lambda: (producer.send(LABELS.name, _label(2)), producer.flush(5)))
    assert isinstance(other, ProduceFailed)
    with pytest.raises(ProduceFailed):
        producer.flush(5)
    producer.flush(5)  # reported once: a later flush with nothing sent since is clean

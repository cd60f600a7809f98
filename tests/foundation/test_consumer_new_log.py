"""A consumer whose broker comes back on an empty log (a new cluster id) reads the new log whole.

Real Tansu brokers on memory storage: the first SIGKILLed while the consumer still holds records it
fetched from it, then, after a while with no broker at all, a second started on the same port with
another cluster id — what a Kafka pod whose log is on an emptyDir does when it is replaced. Found on
the cluster (tests/k8s/test_failures.py beside other load): the lake lost labels after a broker
restart. A batch fetched from the old log but handled once the new broker answered was tagged with
the new log's id, so the lake's manifest said offsets of the new log were stored that never were.
And (found by CI, same test): ingest's raw-label consumer, on a topic nobody wrote to, stayed unready
for good once the broker had been away — only a handled record cleared "broker metadata unavailable".
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.devstack.ports import free_port
from services.events import EventProducer
from services.events.consumer import ConsumeLoop, ConsumerConfig, Record
from services.events.topics import LABELS
from tests.lake.events import label_event
from tests.support.brokers import start_tansu
from tests.support.waiting import wait_until

KEY = b"one-partition"  # every event on one partition: offsets in both logs line up


def _send(bootstrap: str, prefix: str, count: int) -> None:
    producer = EventProducer(bootstrap, client_id=f"test-new-log-{prefix}")
    for i in range(count):
        producer.send(LABELS.name, label_event(f"{prefix}-{i}", str(i % 10)), key=KEY)
    producer.flush()
    producer.close(5)


class HeldFirstBatch:
    """A handler that holds its first batch until released: the rest of the log waits in the consumer."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []  # (example id, log tag)
        self.first_batch, self.release = threading.Event(), threading.Event()

    def __call__(self, records: list[Record]) -> None:
        if not self.first_batch.is_set():
            self.first_batch.set()
            self.release.wait(60)
        self.handled.extend((r.event.example_id, r.log) for r in records)


@contextmanager
def running_loop(bootstrap: str, handler: HeldFirstBatch, stall_after_s: float = 10.0) -> Iterator[ConsumeLoop]:
    stop = threading.Event()
    deadletter = EventProducer(bootstrap, client_id="test-new-log-dlq")
    config = ConsumerConfig(
        bootstrap, "test-new-log", [LABELS.name], max_batch=10, tag_log=True, stall_after_s=stall_after_s
    )
    loop = ConsumeLoop(config, handler, deadletter, stop)
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        yield loop
        assert runner.is_alive(), loop.healthy()
    finally:
        handler.release.set()
        stop.set()
        runner.join(30)
        deadletter.close(5)


def kill_while_a_batch_is_held(broker: subprocess.Popen, handler: HeldFirstBatch) -> None:
    """Log-a's first batch in the handler, the rest prefetched, then the broker SIGKILLed and the batch let go."""
    assert handler.first_batch.wait(60), "the consumer never got a batch from log-a"
    time.sleep(1)  # the consumer prefetches the rest of log-a meanwhile
    broker.kill()
    broker.wait(10)
    handler.release.set()


@dataclass
class Logs:
    """Tansu brokers on one port: log-a (40 records in) first, log-b once `start_log_b()`."""

    port: int
    output: Path
    brokers: list[subprocess.Popen]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_log_b(self) -> None:
        self.brokers.append(start_tansu(self.port, "log-b", self.output))


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    port = free_port()
    output = tmp_path / "tansu.log"
    it = Logs(port, output, [start_tansu(port, "log-a", output)])
    try:
        _send(it.bootstrap, "a", 40)
        yield it
    finally:
        for proc in it.brokers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_records_of_a_gone_log_are_dropped_and_the_new_log_is_read_from_its_start(logs: Logs) -> None:
    handler = HeldFirstBatch()
    with running_loop(logs.bootstrap, handler) as loop:
        kill_while_a_batch_is_held(logs.brokers[0], handler)
        time.sleep(3)  # no broker at all: the loop waits for one, it does not die
        logs.start_log_b()
        _send(logs.bootstrap, "b", 100)

        def every_b() -> bool:
            return {f"b-{i}" for i in range(100)} <= {eid for eid, tag in handler.handled if tag == "log-b"}

        wait_until(every_b, 90, message="every record of log-b handled, tagged log-b")
        tagged_b = [eid for eid, tag in handler.handled if tag == "log-b"]
        # Nothing of log-a passes for log-b (the lake would believe it stored log-b's offsets).
        assert all(eid.startswith("b-") for eid in tagged_b), [e for e in tagged_b if not e.startswith("b-")][:5]
        assert all(tag == "log-a" for eid, tag in handler.handled if eid.startswith("a-"))
        assert loop.renewals == 1
        assert loop.healthy()[0], loop.healthy()


def test_an_idle_topic_is_ready_again_once_the_broker_is_back(logs: Logs) -> None:
    """Nothing arrives after the broker's return: the loop asks the broker itself and is ready again."""
    handler = HeldFirstBatch()
    with running_loop(logs.bootstrap, handler, stall_after_s=1.0) as loop:
        kill_while_a_batch_is_held(logs.brokers[0], handler)
        wait_until(lambda: not loop.healthy()[0], 30, message="unready while no broker answers")
        assert "broker metadata unavailable" in loop.healthy()[1], loop.healthy()
        logs.start_log_b()
        wait_until(lambda: loop.healthy()[0], 30, message="ready again with no record to handle")
        _send(logs.bootstrap, "b", 20)
        wait_until(
            lambda: {f"b-{i}" for i in range(20)} <= {eid for eid, tag in handler.handled if tag == "log-b"},
            60,
            message="log-b's records handled by the renewed consumer",
        )
        assert all(eid.startswith("b-") for eid, tag in handler.handled if tag == "log-b")
        assert loop.renewals == 1  # at log-b's first batch: its positions were in log-a

"""A consumer whose broker comes back on an empty log (a new cluster id) reads the new log whole.

Real Tansu brokers on memory storage: the first SIGKILLed while the consumer still holds records it
fetched from it, then, after a while with no broker at all, a second started on the same port with
another cluster id — what a Kafka pod whose log is on an emptyDir does when it is replaced. Found on
the cluster (tests/k8s/test_failures.py beside other load): the lake lost labels after a broker
restart. A batch fetched from the old log but handled once the new broker answered was tagged with
the new log's id, so the lake's manifest said offsets of the new log were stored that never were.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

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


def test_records_of_a_gone_log_are_dropped_and_the_new_log_is_read_from_its_start(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    brokers = [start_tansu(port, "log-a", tmp_path / "tansu.log")]
    handled: list[tuple[str, str]] = []  # (example id, log tag)
    first_batch, release = threading.Event(), threading.Event()

    def handler(records: list[Record]) -> None:
        if not first_batch.is_set():
            first_batch.set()
            release.wait(60)  # hold the first batch: the rest of log-a waits in the consumer's queue
        handled.extend((r.event.example_id, r.log) for r in records)

    stop = threading.Event()
    deadletter = EventProducer(bootstrap, client_id="test-new-log-dlq")
    config = ConsumerConfig(bootstrap, "test-new-log", [LABELS.name], max_batch=10, tag_log=True)
    loop = ConsumeLoop(config, handler, deadletter, stop)
    runner = threading.Thread(target=loop.run, daemon=True)
    try:
        _send(bootstrap, "a", 40)
        runner.start()
        assert first_batch.wait(60), "the consumer never got a batch from log-a"
        time.sleep(1)  # the consumer prefetches the rest of log-a meanwhile
        brokers[0].kill()
        brokers[0].wait(10)
        release.set()
        time.sleep(3)  # no broker at all: the loop waits for one, it does not die
        assert runner.is_alive()
        brokers.append(start_tansu(port, "log-b", tmp_path / "tansu.log"))
        _send(bootstrap, "b", 100)

        def every_b() -> bool:
            return {f"b-{i}" for i in range(100)} <= {eid for eid, tag in handled if tag == "log-b"}

        wait_until(every_b, 90, message="every record of log-b handled, tagged log-b")
        tagged_b = [eid for eid, tag in handled if tag == "log-b"]
        # Nothing of log-a passes for log-b (the lake would believe it stored log-b's offsets).
        assert all(eid.startswith("b-") for eid in tagged_b), [e for e in tagged_b if not e.startswith("b-")][:5]
        assert all(tag == "log-a" for eid, tag in handled if eid.startswith("a-"))
        assert loop.renewals == 1
        assert runner.is_alive() and loop.healthy()[0], loop.healthy()
    finally:
        release.set()
        stop.set()
        if runner.is_alive():
            runner.join(30)
        deadletter.close(5)
        for proc in brokers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

"""A broker back without its log (a new cluster id) gets what a service published only once.

Real Tansu brokers on memory storage: the first SIGKILLed and a second started on the same port with
another cluster id, which is what a broker pod whose log is on an emptyDir does when it is replaced.
"""

from __future__ import annotations

import threading
from pathlib import Path

from services.devstack.ports import free_port
from services.events import EventProducer
from services.events.new_broker import NewBrokerWatch
from services.projects.catalog import Project, publish_project
from tests.support.brokers import start_tansu
from tests.support.kafka_reader import read_topic
from tests.support.projects import example_spec
from tests.support.waiting import wait_until


def test_projects_are_published_again_to_a_broker_that_lost_them(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    brokers = [start_tansu(port, "cluster-old", tmp_path / "tansu.log")]
    producer = EventProducer(bootstrap, client_id="test-new-broker-watch")
    project = Project(example_spec("digits"), 1, "sha")
    republished: list[int] = []

    def republish() -> None:
        republished.append(1)
        publish_project(producer, project)

    watch = NewBrokerWatch(producer, republish, interval_s=0.2)
    stop = threading.Event()
    runner = threading.Thread(target=watch.run, args=(stop,), daemon=True)
    try:
        assert watch.check() is False  # the first id seen is the baseline
        publish_project(producer, project)
        assert watch.check() is False and republished == []  # the same broker: nothing again

        brokers[0].kill()
        brokers[0].wait(10)
        assert watch.check() is False and republished == []  # no broker at all is not a new one

        brokers.append(start_tansu(port, "cluster-new", tmp_path / "tansu.log"))
        assert read_topic(bootstrap, "flywheel.projects", 1, timeout_s=3) == []  # it lost the topic's records
        runner.start()
        wait_until(lambda: republished, 30, message="the watch noticing the new broker")
        got = read_topic(bootstrap, "flywheel.projects", 1, timeout_s=20)
        assert [m.key() for m in got] == [project.name.encode()]
        assert watch.check() is False and len(republished) == 1  # once per new broker, not at every check
    finally:
        stop.set()
        if runner.is_alive():
            runner.join(10)
        producer.close(5)
        for proc in brokers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

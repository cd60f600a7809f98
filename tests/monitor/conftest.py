"""Fixtures for the monitor: digits traffic with a real classifier, a lake folder holding a real
reference profile, and a monitor subprocess on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from bench.drift.traffic import DigitsTraffic, Shift
from services.devstack.ports import free_port
from services.events import EventProducer, new_meta
from services.events.topics import MODELS, PREDICTIONS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.support.credentials import service_env
from tests.support.waiting import wait_until

SNAPSHOT = "snap-digits-ref"


@pytest.fixture(scope="session")
def traffic() -> DigitsTraffic:
    return DigitsTraffic.load(seed=0)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory, traffic: DigitsTraffic) -> Path:
    """A lake root with one snapshot's profile.json, laid out as the lake writes it."""
    root = tmp_path_factory.mktemp("lake")
    folder = root / "snapshots" / SNAPSHOT
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps(traffic.profile(SNAPSHOT)))
    return root


def publish_model(bootstrap: str, model: str, version: str = "1", snapshot_id: str = SNAPSHOT) -> None:
    producer = EventProducer(bootstrap)
    event = ev.ModelPublished(
        meta=new_meta("test"), model=model, version=version, stage="production", snapshot_id=snapshot_id
    )
    producer.send(MODELS.name, event)
    producer.flush()


def send_predictions(
    bootstrap: str,
    traffic: DigitsTraffic,
    model: str,
    n: int,
    seed: int,
    shift: Shift | None = None,
    class_weights: np.ndarray | None = None,
    version: str = "1",
    synthetic: bool = False,
) -> None:
    rng = np.random.default_rng(seed)
    x, _, predicted, scores = traffic.sample(n, rng, shift, class_weights)
    producer = EventProducer(bootstrap)
    for i in range(n):
        log = ev.PredictionLog(
            meta=new_meta("test"),
            request_id=uuid.uuid4().hex,
            model=model,
            model_version=version,
            input_features=x[i].tolist(),
            output_scores=scores[i].tolist(),
            predicted_label=str(predicted[i]),
            predicted_class=int(predicted[i]),
            latency_ms=3.0,
            route="production",
            synthetic=synthetic,
        )
        producer.send(PREDICTIONS.name, log)
    producer.flush()


def read_all(bootstrap: str, topic: str, keep: Callable[[bytes], bool] | None = None) -> list[bytes]:
    """Every message value of a topic up to its current end (one read, no group commits)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[bytes] = []
        done: set[int] = set()
        while len(done) < len(ends):
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
                if keep is None or keep(msg.value()):
                    out.append(msg.value())
        return out
    finally:
        consumer.close()


@dataclass
class MonitorProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels match (0 when absent)."""
        text = httpx.get(f"http://{self.address}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


@pytest.fixture
def start_monitor(tmp_path: Path, lake: Path) -> Iterator[Callable[..., MonitorProcess]]:
    started: list[MonitorProcess] = []

    def start(bootstrap: str, **settings: object) -> MonitorProcess:
        port = free_port()
        env = {
            **os.environ,
            "FLYWHEEL_HOME": str(tmp_path / "home"),
            "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
            "FLYWHEEL_MONITOR_HTTP_PORT": str(port),
            "FLYWHEEL_MONITOR_LAKE_ROOT": f"file://{lake}",
            "FLYWHEEL_MONITOR_GROUP": f"monitor-{uuid.uuid4().hex[:8]}",
            "FLYWHEEL_MONITOR_TIME_STEP_S": "3600",  # tests drive the count windows
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            **service_env("monitor"),
        }
        env.update({f"FLYWHEEL_MONITOR_{k.upper()}": str(v) for k, v in settings.items()})
        log = tmp_path / f"monitor-{port}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "services.monitor"], env=env, stdout=fh, stderr=fh)
        mon = MonitorProcess(proc, port, log)
        started.append(mon)
        wait_until(
            lambda: httpx.get(f"http://{mon.address}/readyz", timeout=2).status_code == 200,
            60,
            proc=proc,
            message="monitor ready",
        )
        return mon

    yield start
    for mon in started:
        if mon.proc.poll() is None:
            mon.proc.send_signal(signal.SIGTERM)
        code = mon.proc.wait(60)
        assert code == 0, f"monitor exited {code} on SIGTERM:\n{mon.log.read_text()[-3000:]}"

"""The broker restarts mid-stream: the lake rides it out and ends with exactly every row.

Apache Kafka keeps its log on disk, so a broker restarted with the same port and data folder has
every event it acknowledged (Tansu runs on memory storage here and would lose them: not a
broker restart but a new, empty broker, so this test uses Apache Kafka).
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

from services.devstack.brokers import Broker, _wait_ready, kafka_jars_present, start_apache_kafka
from services.devstack.ports import free_port
from services.events import EventProducer, ensure_topics
from tests.lake.conftest import count_rows, start_lake, wait_rows
from tests.lake.events import LABELS, label_event
from tests.support.required import unavailable

TOTAL = 6000


def _restart(broker: Broker) -> Broker:
    """Stop the broker's process (keeping its data folder) and start it again on the same port."""
    os.killpg(broker.process.pid, signal.SIGTERM)
    broker.process.wait(60)
    with broker.log_path.open("ab") as log:
        proc = subprocess.Popen(
            broker.process.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    restarted = Broker("apache", broker.port, proc, broker.log_path, workdir=broker.workdir)
    _wait_ready(restarted, 90)
    return restarted


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    if not kafka_jars_present():
        unavailable("Apache Kafka jars missing: run `make kafka-jars`")
    broker = start_apache_kafka(tmp_path / "kafka", port=free_port())
    lake = None
    try:
        ensure_topics(broker.bootstrap)
        run = uuid.uuid4().hex[:8]
        producer = EventProducer(broker.bootstrap)
        for i in range(TOTAL // 2):
            producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
        producer.flush()
        root = tmp_path / "lake"
        # INFO: the consumer's partition assignments, revokes and losses are in the log a failure prints.
        lake = start_lake(
            broker.bootstrap,
            root,
            f"restart-{run}",
            tmp_path / "home",
            log_level="INFO",
            flush_rows="300",
        )
        wait_rows(root, run, TOTAL // 4, lake)
        broker = _restart(broker)
        producer = EventProducer(broker.bootstrap)
        for i in range(TOTAL // 2, TOTAL):
            producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
        producer.flush()
        wait_rows(root, run, TOTAL, lake, timeout_s=180)
        assert lake.terminate() == 0
        lake = None
        assert count_rows(root, run) == (TOTAL, TOTAL)
    except BaseException:
        # The broker's folder goes with stop(): keep its log's tail in the report.
        print(broker.log_path.read_text(errors="replace")[-3000:] if broker.log_path.exists() else "no broker log")
        raise
    finally:
        if lake is not None:
            lake.proc.kill()
            lake.proc.wait(10)
        broker.stop()

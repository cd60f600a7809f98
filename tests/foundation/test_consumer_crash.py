"""A consumer killed with SIGKILL mid-stream and restarted loses nothing and applies nothing twice.

The consumer is a real subprocess (tests/support/ledger_consumer.py) writing to a real SQL
table through the idempotency ledger; we count rows in that table.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid

from sqlalchemy import create_engine, text

from services.devstack.brokers import Broker
from services.events import EventProducer, new_meta
from services.events.topics import LABELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.support.waiting import wait_until


def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM test_labels")).scalar_one())
    except Exception:  # noqa: BLE001 - the table appears once the consumer has migrated
        return 0
    finally:
        engine.dispose()


def _start(kafka: Broker, group: str, url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.ledger_consumer", kafka.bootstrap, group, url])


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(kafka: Broker, database_url: str) -> None:
    group = f"crash-{uuid.uuid4().hex[:8]}"
    total = 3000
    producer = EventProducer(kafka.bootstrap)
    # The topic is shared with earlier tests, so only this run's example ids are counted.
    run = uuid.uuid4().hex[:6]
    events = [ev.LabelEvent(meta=new_meta("test"), example_id=f"{run}-{i}", label=str(i % 10)) for i in range(total)]
    # Replays of the same events (same event_id) must be harmless: send 300 of them twice.
    duplicates = random.Random(1).sample(events, 300)
    rng = random.Random(7)
    proc = _start(kafka, group, database_url)
    kills = 0
    try:
        for start in range(0, total, 500):
            for e in events[start : start + 500]:
                producer.send(LABELS.name, e)
            producer.flush()
            if rng.random() < 0.8:
                wait_until(lambda: _count(database_url) > 0, 60, proc=proc, message="consumer progress")
                proc.kill()  # SIGKILL: no drain, no commit
                proc.wait(10)
                kills += 1
                proc = _start(kafka, group, database_url)
        for e in duplicates:
            producer.send(LABELS.name, e)
        producer.flush()
        ours = lambda: _count_ours(database_url, run)  # noqa: E731
        wait_until(lambda: ours() >= total, 120, proc=proc, message=f"{total} rows")
        assert ours() == total
        assert kills >= 2
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, "consumer did not drain cleanly on SIGTERM"


def _count_ours(url: str, run: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM test_labels WHERE example_id LIKE :p"), {"p": f"{run}-%"}
                ).scalar_one()
            )
    except Exception:  # noqa: BLE001
        return 0
    finally:
        engine.dispose()

"""SIGKILL of the lake at random points while it sinks 20,000 events; restarted each time, it
ends with exactly 20,000 rows (no loss, no duplicate in the files), on Tansu and Apache Kafka."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from services.cli.brokers import Broker
from services.events import EventProducer
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from tests.lake.conftest import count_rows, start_lake, wait_rows
from tests.lake.events import LABELS, PREDICTIONS, label_event, prediction

TOTAL_LABELS = 16_000
TOTAL_PREDICTIONS = 4_000


def _produce(producer: EventProducer, run: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        if i % 5 == 4:
            producer.send(PREDICTIONS.name, prediction(f"{run}-p{i}", "digits", str(i % 3), f"{run}-{i}", str(i % 10)))
        else:
            producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
    producer.flush()


def test_sigkill_at_random_points_ends_with_exactly_every_row(kafka: Broker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    total = TOTAL_LABELS + TOTAL_PREDICTIONS
    root, group = tmp_path / "lake", f"lake-crash-{run}"
    rng = random.Random(run)
    producer = EventProducer(kafka.bootstrap)
    _produce(producer, run, 0, total // 2)
    # Small flushes and eager compaction, so kills land in writes, renames and compactions.
    settings = {"flush_rows": "700", "compact_min_files": "4", "compact_interval_s": "0.3"}
    lake = start_lake(kafka.bootstrap, root, group, tmp_path / "home", **settings)
    kills = 0
    try:
        for target in sorted(rng.sample(range(1_000, total - 1_000), 3)):
            if kills == 1:
                _produce(producer, run, total // 2, total)  # the rest arrives mid-stream
            wait_rows(root, run, target, lake.proc, timeout_s=180)
            lake.kill()
            kills += 1
            lake = start_lake(kafka.bootstrap, root, group, tmp_path / "home", **settings)
        wait_rows(root, run, total, lake.proc, timeout_s=180)
    finally:
        assert lake.terminate() == 0, "the lake did not drain cleanly on SIGTERM"
    assert kills == 3
    raw, distinct = count_rows(root, run)
    assert (raw, distinct) == (total, total)
    # Nothing left half-done: every file has an entry and no temporary file remains.
    store = LakeStore(f"file://{root}")
    assert Manifest.load(store).reconcile() == {"temporaries": 0, "orphans": 0, "dangling": 0, "superseded": 0}

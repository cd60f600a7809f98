"""SIGKILL of the lake at random points while it sinks 20,000 events; restarted each time, it
ends with exactly 20,000 rows (no loss, no duplicate in the files), on Tansu and Apache Kafka."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from tests.lake.conftest import count_rows, start_lake, wait_rows
from tests.lake.events import LABELS, PREDICTIONS, label_event, prediction

TOTAL_LABELS = 16_000
TOTAL_PREDICTIONS = 4_000
TOTAL = TOTAL_LABELS + TOTAL_PREDICTIONS
UP_FRONT = TOTAL // 2  # produced before the lake starts; the rest only after the first kill


def kill_points(rng: random.Random) -> list[int]:
    """The row counts at which the lake is killed. The first must be within the events produced
    up front: the rest of them is produced only after the first kill, so a lake waited on for
    more than that would wait for rows that never come."""
    first = rng.randrange(1_000, UP_FRONT)
    return [first, *sorted(rng.sample(range(first + 1, TOTAL - 1_000), 2))]


def _produce(producer: EventProducer, run: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        if i % 5 == 4:
            producer.send(PREDICTIONS.name, prediction(f"{run}-p{i}", "digits", str(i % 3), f"{run}-{i}", str(i % 10)))
        else:
            producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
    producer.flush()


def test_every_kill_point_is_reached_with_the_events_produced_by_then() -> None:
    """Deterministic guard for the crash test below: its first kill point was once drawn from the
    whole stream, and one run in eight then waited 180 s for rows not yet produced."""
    for seed in range(5_000):
        points = kill_points(random.Random(seed))
        produced = UP_FRONT
        for kills, target in enumerate(points):
            if kills == 1:
                produced = TOTAL
            assert 1_000 <= target <= produced - 1, (seed, points)
        assert points == sorted(points) and len(set(points)) == 3 and points[-1] < TOTAL - 1_000, (seed, points)


def test_sigkill_at_random_points_ends_with_exactly_every_row(kafka: Broker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    root, group = tmp_path / "lake", f"lake-crash-{run}"
    rng = random.Random(run)
    producer = EventProducer(kafka.bootstrap)
    _produce(producer, run, 0, UP_FRONT)
    # Small flushes and eager compaction, so kills land in writes, renames and compactions.
    settings = {"flush_rows": "700", "compact_min_files": "4", "compact_interval_s": "0.3"}
    lake = start_lake(kafka.bootstrap, root, group, tmp_path / "home", **settings)
    kills = 0
    try:
        for target in kill_points(rng):
            if kills == 1:
                _produce(producer, run, UP_FRONT, TOTAL)  # the rest arrives mid-stream
            wait_rows(root, run, target, lake, timeout_s=180)
            lake.kill()
            kills += 1
            lake = start_lake(kafka.bootstrap, root, group, tmp_path / "home", **settings)
        wait_rows(root, run, TOTAL, lake, timeout_s=180)
    finally:
        assert lake.terminate() == 0, "the lake did not drain cleanly on SIGTERM"
    assert kills == 3
    raw, distinct = count_rows(root, run)
    assert (raw, distinct) == (TOTAL, TOTAL)
    # Nothing left half-done: every file has an entry and no temporary file remains.
    store = LakeStore(f"file://{root}")
    assert Manifest.load(store).reconcile() == {"temporaries": 0, "orphans": 0, "dangling": 0, "superseded": 0}

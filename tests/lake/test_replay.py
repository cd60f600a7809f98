"""A replay of a whole topic, into the same lake or a fresh one, gives identical Parquet contents."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from tests.lake.conftest import count_rows, metric, start_lake, wait_rows
from tests.lake.events import LABELS, PREDICTIONS, label_event, prediction
from tests.support.waiting import wait_until

N_LABELS, N_PREDICTIONS = 3000, 600


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".tmp-")
    }


def _contents(root: Path, topic: str) -> pa.Table:
    store = LakeStore(f"file://{root}")
    tables = [
        pq.read_table(io.BytesIO(store.read_bytes(e.path))).replace_schema_metadata(None)
        for e in Manifest.load(store).files(topic)
    ]
    return pa.concat_tables(tables).sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def test_replaying_a_whole_topic_twice_gives_identical_parquet(tansu: Broker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    producer = EventProducer(tansu.bootstrap)
    for i in range(N_LABELS):
        producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
    for i in range(N_PREDICTIONS):
        producer.send(PREDICTIONS.name, prediction(f"{run}-p{i}", "digits", "1", f"{run}-{i}", str(i % 7)))
    producer.flush()
    total = N_LABELS + N_PREDICTIONS
    root_a, root_b = tmp_path / "a", tmp_path / "b"

    # No compaction in the two runs compared file by file: the compactor runs on a timer, and whether
    # it fires within a run depends on how fast the machine is, not on what the replay does.
    no_compaction = {"compact_interval_s": "3600"}
    lake = start_lake(tansu.bootstrap, root_a, f"g1-{run}", tmp_path / "home1", flush_rows="400", **no_compaction)
    wait_rows(root_a, run, total, lake)
    assert lake.terminate() == 0
    first = _files(root_a)

    # The same lake, a new consumer group: the whole topic is replayed, and nothing changes.
    lake = start_lake(tansu.bootstrap, root_a, f"g2-{run}", tmp_path / "home2", flush_rows="400", **no_compaction)
    wait_until(lambda: metric(lake, "flywheel_lake_rows_skipped_total") >= total, 120, proc=lake.proc)
    assert lake.terminate() == 0
    assert _files(root_a) == first
    assert count_rows(root_a, run) == (total, total)

    # A fresh lake with other batch sizes and compaction: the same rows, byte for byte per row.
    lake = start_lake(
        tansu.bootstrap,
        root_b,
        f"g3-{run}",
        tmp_path / "home3",
        flush_rows="97",
        compact_min_files="3",
        compact_interval_s="0.2",
    )
    wait_rows(root_b, run, total, lake)
    assert lake.terminate() == 0
    for topic in (LABELS.name, PREDICTIONS.name):
        assert _contents(root_a, topic).equals(_contents(root_b, topic))

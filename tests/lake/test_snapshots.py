"""Snapshots over a lake filled in process: deterministic, stratified, immutable, diffable, copyable."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.lake.aggregates import Aggregates, LabelFilter
from services.lake.errors import EmptySnapshot, InvalidRequest, SnapshotNotFound
from services.lake.manifest import Manifest
from services.lake.sink import LakeSink
from services.lake.snapshots import Snapshots, SplitSpec
from services.lake.store import LakeStore
from tests.lake.events import LABELS, T0, label_event, records
from tests.support.s3 import S3Server


def _lake(root: Path | str) -> tuple[LakeSink, Snapshots]:
    store = LakeStore(root if isinstance(root, str) else f"file://{root}")
    manifest = Manifest.load(store)
    lock = threading.RLock()
    aggregates = Aggregates(store, lambda: manifest, lock)
    return LakeSink(manifest, lock), Snapshots(store, aggregates, "test-code-1")


EVENTS = [label_event(f"ex{i:04d}", str(i % 10), source="api" if i % 3 else "label-studio") for i in range(500)]


def test_snapshot_is_deterministic_stratified_and_in_the_contract_format(tmp_path: Path) -> None:
    sink_a, snaps_a = _lake(tmp_path / "a")
    sink_b, snaps_b = _lake(tmp_path / "b")
    sink_a.handle(records(LABELS.name, EVENTS))
    # the other lake gets the same events in another order and other batches
    for start in range(0, 500, 70):
        sink_b.handle(records(LABELS.name, EVENTS[::-1][start : start + 70], partition=2, start=start))
    spec = SplitSpec(0.7, 0.2, 0.1, salt="s1")
    a = snaps_a.create(LabelFilter(), spec)
    b = snaps_b.create(LabelFilter(), spec)
    assert a["snapshot_id"] == b["snapshot_id"]
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]
    assert snaps_a.create(LabelFilter(), spec)["created_at"] == a["created_at"]  # immutable: same one back

    folder = tmp_path / "a" / "snapshots" / a["snapshot_id"]
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("snapshot_id", "created_at", "code_version", "filters", "split", "files", "rows_per_split"):
        assert key in manifest
    assert manifest["feature_dim"] == 64 and manifest["label_counts"] == {str(d): 50 for d in range(10)}
    assert manifest["rows_per_split"] == {"train": 350, "validation": 100, "test": 50}  # exact per class
    for f in manifest["files"]:
        data = (folder / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        table = pq.read_table(folder / f["path"])
        assert table.column_names == [
            "example_id",
            "label",
            "features",
            "object_uri",
            "sha256",
            "updated_at",
            "content_type",
        ]
        assert str(table.schema.field("updated_at").type) == "timestamp[us, tz=UTC]"
        counts = table.group_by("label").aggregate([("example_id", "count")]).to_pylist()
        assert {c["example_id_count"] for c in counts} == {f["rows"] // 10}  # stratified
    profile = json.loads((folder / "profile.json").read_text())
    assert profile["snapshot_id"] == a["snapshot_id"] and profile["n"] == 350
    assert set(profile["class_priors"]) == {str(d) for d in range(10)}

    other_salt = snaps_a.create(LabelFilter(), SplitSpec(0.7, 0.2, 0.1, salt="s2"))
    assert other_salt["snapshot_id"] != a["snapshot_id"]
    assert {m["snapshot_id"] for m in snaps_a.list()} == {a["snapshot_id"], other_salt["snapshot_id"]}

    copied = snaps_a.copy(a["snapshot_id"], tmp_path / "local")
    assert (copied / "train.parquet").read_bytes() == (folder / "train.parquet").read_bytes()


def test_diff_filters_and_bad_requests(tmp_path: Path) -> None:
    sink, snaps = _lake(tmp_path / "lake")
    sink.handle(records(LABELS.name, EVENTS[:300]))
    before = snaps.create(LabelFilter(), SplitSpec())
    later = T0 + dt.timedelta(hours=1)
    changes = [
        label_event("ex0001", "5", seq=1, action=ev.LABEL_ACTION_UPDATED, when=later),
        label_event("ex0002", "2", seq=1, action=ev.LABEL_ACTION_DELETED, when=later),
    ]
    new = [label_event(f"ex{i:04d}", str(i % 10), when=later) for i in range(300, 310)]
    sink.handle(records(LABELS.name, [*changes, *new], start=300))
    after = snaps.create(LabelFilter(), SplitSpec())
    diff = snaps.diff(before["snapshot_id"], after["snapshot_id"])
    assert diff["added"] == [f"ex{i:04d}" for i in range(300, 310)]
    assert diff["removed"] == ["ex0002"]
    assert diff["relabelled"] == [{"example_id": "ex0001", "before": "1", "after": "5"}]
    assert sum(diff["label_counts_delta"].values()) == 9

    # as_of before the changes reproduces the first snapshot exactly
    again = snaps.create(LabelFilter(as_of=T0 + dt.timedelta(minutes=1)), SplitSpec())
    assert again["snapshot_id"] == before["snapshot_id"]
    only = snaps.create(LabelFilter(labels=("3", "4"), sources=("api",)), SplitSpec())
    assert set(only["label_counts"]) == {"3", "4"}

    with pytest.raises(InvalidRequest, match="sum to 1"):
        snaps.create(LabelFilter(), SplitSpec(0.5, 0.1, 0.1))
    with pytest.raises(EmptySnapshot):
        snaps.create(LabelFilter(labels=("nope",)), SplitSpec())
    with pytest.raises(SnapshotNotFound):
        snaps.get("0" * 20)
    with pytest.raises(InvalidRequest):
        snaps.get("../etc")


def test_a_snapshot_cut_on_s3_is_the_local_one_and_the_trainer_reads_it(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same events, a lake on a real S3 server (tests/support/s3.py) and one on disk: the same snapshot
    id and file hashes, and the trainer loads the S3 one by its s3:// URI with the AWS_* settings."""
    from services.trainer.data.snapshot import load_snapshot

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    sink_local, snaps_local = _lake(tmp_path / "local")
    sink_s3, snaps_s3 = _lake(f"s3://{s3_server.bucket()}/lake")
    sink_local.handle(records(LABELS.name, EVENTS[:200]))
    sink_s3.handle(records(LABELS.name, EVENTS[:200]))
    spec = SplitSpec(0.7, 0.2, 0.1, salt="s3")
    local, remote = snaps_local.create(LabelFilter(), spec), snaps_s3.create(LabelFilter(), spec)
    assert remote["snapshot_id"] == local["snapshot_id"]
    assert [f["sha256"] for f in remote["files"]] == [f["sha256"] for f in local["files"]]

    uri = snaps_s3.uri(remote["snapshot_id"])
    assert uri.startswith("s3://")
    data = load_snapshot(uri)
    assert data.snapshot_id == remote["snapshot_id"] and len(data.train) == remote["rows_per_split"]["train"] == 140

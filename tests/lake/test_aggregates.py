"""The sink and the DuckDB aggregates on known data, in process (no broker: the sink's handler
gets the same `Record`s the consume loop would give it), on a local folder and on a real S3 server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import pytest

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.lake.aggregates import Aggregates
from services.lake.manifest import Manifest
from services.lake.sink import LakeSink
from services.lake.store import LakeStore
from services.storage.s3 import s3_filesystem
from tests.lake.events import LABELS, PREDICTIONS, T0, label_event, prediction, records
from tests.support.s3 import S3Server


@pytest.fixture(params=["file", "s3"])
def lake(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[LakeSink, Aggregates]:
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        store = LakeStore(f"s3://{server.bucket()}/lake")
    else:
        store = LakeStore(f"file://{tmp_path / 'lake'}")
    manifest = Manifest.load(store)
    lock = threading.RLock()
    return LakeSink(manifest, lock, compact_min_files=3), Aggregates(store, lambda: manifest, lock)


def test_latest_label_distribution_stats_and_live_accuracy(lake: tuple[LakeSink, Aggregates]) -> None:
    sink, agg = lake
    later = T0 + dt.timedelta(minutes=5)
    labels = [
        label_event("a", "1"),
        label_event("b", "2"),
        label_event("c", "2"),
        label_event("d", "3"),
        # updates and a delete: a → 7, d deleted; an older update of b must not win
        label_event("a", "7", seq=1, action=ev.LABEL_ACTION_UPDATED, when=later),
        label_event("d", "3", seq=1, action=ev.LABEL_ACTION_DELETED, when=later),
        label_event("b", "9", seq=1, action=ev.LABEL_ACTION_UPDATED, when=T0 - dt.timedelta(hours=1)),
    ]
    sink.handle(records(LABELS.name, labels))
    preds = [
        prediction("p1", "digits", "1", "a", "7"),  # right (a is 7 now)
        prediction("p2", "digits", "1", "b", "3"),  # wrong
        prediction("p3", "digits", "1", "zz", "3"),  # never labelled
        prediction("p4", "digits", "2", "c", "2"),  # right
        prediction("p5", "digits", "2", "d", "3"),  # d was deleted: not labelled
    ]
    sink.handle(records(PREDICTIONS.name, preds, partition=1))
    # a replay of both batches (and a producer duplicate at a new offset) changes nothing
    sink.handle(records(LABELS.name, labels))
    sink.handle(records(PREDICTIONS.name, preds[:1], partition=1, start=100))

    assert agg.label_distribution() == {"2": 2, "7": 1}
    rows, total = agg.latest_labels()
    assert total == 3 and [(r["example_id"], r["label"]) for r in rows] == [("a", "7"), ("b", "2"), ("c", "2")]
    stats = {s.label: s for s in agg.feature_stats()}
    assert stats["2"].count == 2 and len(stats["2"].mean) == 64
    assert stats["2"].mean[0] == pytest.approx(0.2, abs=0.02)
    acc = {(m.model, m.model_version): m for m in agg.live_accuracy()}
    assert (acc[("digits", "1")].predictions, acc[("digits", "1")].labelled, acc[("digits", "1")].correct) == (3, 2, 1)
    assert acc[("digits", "2")].accuracy == 1.0 and acc[("digits", "2")].labelled == 1
    topics = {t.topic: t for t in agg.topic_stats()}
    assert topics[LABELS.name].rows == 7 and topics[LABELS.name].distinct_events == 7
    # the duplicate prediction p1 sits at a new offset: its event id was stored recently, so skipped
    assert topics[PREDICTIONS.name].rows == 5 and topics[PREDICTIONS.name].distinct_events == 5


def test_compaction_keeps_rows_and_coverage(lake: tuple[LakeSink, Aggregates]) -> None:
    sink, agg = lake
    events = [label_event(f"e{i}", str(i % 10)) for i in range(30)]
    for start in range(0, 30, 5):
        sink.handle(records(LABELS.name, events[start : start + 5], start=start)[:5])
    assert len(sink.manifest.files()) == 6
    assert sink.compact() == 6
    assert len(sink.manifest.files()) == 1
    sink.handle(records(LABELS.name, events))  # a full replay after compaction: all covered
    reloaded = Manifest.load(sink.store)
    assert [e.rows for e in reloaded.files()] == [30]
    assert sum(agg.label_distribution().values()) == 30


def test_a_new_broker_log_is_written_not_skipped(lake: tuple[LakeSink, Aggregates]) -> None:
    """A broker on memory storage restarted starts its offsets at 0 again under a new cluster id:
    those records are new (written), and events the old log had (re-sent by ingest) are not."""
    sink, agg = lake
    old = [label_event(f"o{i}", "1") for i in range(10)]
    sink.handle([dataclasses.replace(r, log="cluster-a") for r in records(LABELS.name, old)])
    new = old[5:] + [label_event(f"n{i}", "2") for i in range(10)]  # ingest re-sends 5, then 10 new ones
    sink.handle([dataclasses.replace(r, log="cluster-b") for r in records(LABELS.name, new)])
    # the same offsets again in the new log: a replay, covered
    sink.handle([dataclasses.replace(r, log="cluster-b") for r in records(LABELS.name, new)])
    topics = {t.topic: t for t in agg.topic_stats()}
    assert topics[LABELS.name].rows == 20 and topics[LABELS.name].distinct_events == 20
    assert {e.log for e in Manifest.load(sink.store).files()} == {"cluster-a", "cluster-b"}
    fresh = LakeSink(Manifest.load(sink.store), sink.lock)  # a restarted lake remembers both
    fresh.handle([dataclasses.replace(r, log="cluster-b") for r in records(LABELS.name, new)])
    fresh.handle([dataclasses.replace(r, log="cluster-c") for r in records(LABELS.name, new)])
    assert {t.topic: t for t in agg.topic_stats()}[LABELS.name].rows == 20


def test_an_s3_lake_is_written_to_the_bucket_and_read_back_after_a_restart(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Parquet files and the manifest are objects in the bucket (created by the lake), and a lake
    started afresh on the same URL reads the same rows back."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = s3_server.bucket()
    store = LakeStore(f"s3://{bucket}/lake")
    sink = LakeSink(Manifest.load(store), threading.RLock())
    sink.handle(records(LABELS.name, [label_event("a", "1"), label_event("b", "2"), label_event("c", "2")]))

    objects = s3_filesystem(s3_server.settings()).find(f"{bucket}/lake")
    assert any(o.endswith(".parquet") for o in objects), objects
    assert not any("/.tmp-" in o for o in objects), objects
    again = LakeStore(f"s3://{bucket}/lake")
    manifest = Manifest.load(again)
    assert Aggregates(again, lambda: manifest).label_distribution() == {"1": 1, "2": 2}

"""Recovery of the manifest from each state a crash can leave (deterministic, in process)."""

from __future__ import annotations

import threading
from pathlib import Path

from services.lake.manifest import Manifest
from services.lake.sink import LakeSink
from services.lake.store import LakeStore
from tests.lake.events import LABELS, label_event, records

EVENTS = [label_event(f"m{i}", str(i % 10)) for i in range(40)]


def _sink(root: Path) -> LakeSink:
    return LakeSink(Manifest.load(LakeStore(f"file://{root}")), threading.RLock(), compact_min_files=2)


def _rows(root: Path) -> int:
    return sum(e.rows for e in Manifest.load(LakeStore(f"file://{root}")).files())


def test_reconcile_repairs_every_crash_state_and_a_replay_adds_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    sink = _sink(root)
    for start in range(0, 40, 10):
        sink.handle(records(LABELS.name, EVENTS[start : start + 10], start=start))
    store = sink.store
    files = sink.manifest.files()
    # crash after the data rename, before the entry: an orphan file
    store.remove(files[0].manifest_path)
    # crash mid-write: temporaries of a data file and of an entry
    (root / files[1].path).with_name(".tmp-abc-x.parquet").write_bytes(b"partial")
    (root / files[1].manifest_path).with_name(".tmp-abc-x.json").write_bytes(b"{")
    # an entry whose file vanished (e.g. removed by hand)
    lost = files[3]
    (root / lost.path).unlink()

    manifest = Manifest.load(store)
    report = manifest.reconcile()
    assert report == {"temporaries": 2, "orphans": 1, "dangling": 1, "superseded": 0}
    assert _rows(root) == 30
    # the replay writes back exactly the lost range, nothing else
    sink = _sink(root)
    sink.handle(records(LABELS.name, EVENTS))
    assert _rows(root) == 40


def test_an_interrupted_compaction_is_finished_on_start(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    sink = _sink(root)
    for start in range(0, 40, 10):
        sink.handle(records(LABELS.name, EVENTS[start : start + 10], start=start))
    sources = {e.path: (root / e.path).read_bytes() for e in sink.manifest.files()}
    entries = {e.manifest_path: (root / e.manifest_path).read_bytes() for e in sink.manifest.files()}
    assert sink.compact() == 4
    # put the sources back, as if the crash came after the compacted file and its entry
    for rel, data in {**sources, **entries}.items():
        (root / rel).write_bytes(data)
    # … and drop the compacted file's entry too: reconcile rebuilds it from the footer
    compacted = Manifest.load(sink.store).files()
    assert len(compacted) == 5
    (root / next(e for e in compacted if e.sources).manifest_path).unlink()

    manifest = Manifest.load(sink.store)
    report = manifest.reconcile()
    assert report["orphans"] == 1 and report["superseded"] == 4
    assert [e.rows for e in manifest.files()] == [40]
    assert not any((root / rel).exists() for rel in sources)

"""The lake's manifest: one small JSON entry per Parquet file, and the offsets those files cover.

Layout under the lake root::

    events/<topic>/date=<YYYY-MM-DD>/p<partition>-<first offset>-<last offset>.parquet
    events/<topic>/date=<YYYY-MM-DD>/c-<hash of the merged files' names>.parquet   (compacted)
    _manifest/<topic>/date=<YYYY-MM-DD>/<same name>.json

A data file is written under a temporary name and renamed, then its entry is written the same
way, and only then are the Kafka offsets committed. Each Parquet file also records, in its
footer, the offset ranges it covers and (when compacted) the files it replaced, so
`reconcile()` can rebuild a missing entry after a crash between the two renames, and finish a
compaction that a crash interrupted. A record is *covered* when a file holds every record of its
topic, date and partition in an offset range that includes it: a replayed record that is
covered is skipped, so a replay writes nothing twice.

Offsets are positions in one broker's log: each entry names that log (`log`, the broker's
cluster id). A broker on memory storage (Tansu) restarted is a new, empty log whose offsets start
at 0 again; its records are not covered by the old log's files, so they are written, not skipped.
Entries without a log (written before logs were recorded) cover records of every log.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import posixpath
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq

from services.lake.store import LakeStore

log = logging.getLogger(__name__)

DATA = "events"
MANIFEST = "_manifest"
RANGES_KEY = b"flywheel.ranges"
SOURCES_KEY = b"flywheel.sources"
LOG_KEY = b"flywheel.log"


@dataclass(frozen=True)
class Entry:
    """One Parquet file of the lake."""

    path: str  # relative to the lake root
    topic: str
    date: str
    rows: int
    bytes: int
    sha256: str
    ranges: list[tuple[int, int, int]]  # (partition, first offset, last offset)
    sources: list[str] = field(default_factory=list)  # files this one replaced (compaction)
    log: str = ""  # the broker log (cluster id) the offsets are positions in

    @property
    def name(self) -> str:
        return posixpath.basename(self.path).removesuffix(".parquet")

    @property
    def manifest_path(self) -> str:
        return manifest_path(self.topic, self.date, self.name)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        raw = json.loads(data)
        raw["ranges"] = [tuple(r) for r in raw["ranges"]]
        return cls(**raw)


def data_path(topic: str, date: str, name: str) -> str:
    return f"{DATA}/{topic}/date={date}/{name}.parquet"


def manifest_path(topic: str, date: str, name: str) -> str:
    return f"{MANIFEST}/{topic}/date={date}/{name}.json"


def batch_name(partition: int, first: int, last: int, log: str = "") -> str:
    """Deterministic: the same log, partition and offset range always give the same name."""
    name = f"p{partition}-{first:020d}-{last:020d}"
    return f"{name}-{hashlib.sha256(log.encode()).hexdigest()[:8]}" if log else name


def compacted_name(sources: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:20]
    return f"c-{digest}"


def entry_from_parquet(store: LakeStore, path: str) -> Entry:
    """Rebuild a file's manifest entry from the file itself (its footer and bytes)."""
    data = store.read_bytes(path)
    meta = pq.read_metadata(io.BytesIO(data))
    kv = meta.metadata or {}
    ranges = [tuple(r) for r in json.loads(kv.get(RANGES_KEY, b"[]"))]
    sources = list(json.loads(kv.get(SOURCES_KEY, b"[]")))
    log_id = kv.get(LOG_KEY, b"").decode()
    parts = path.split("/")
    return Entry(
        path=path,
        topic=parts[1],
        date=parts[2].removeprefix("date="),
        rows=meta.num_rows,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        ranges=ranges,  # type: ignore[arg-type]
        sources=sources,
        log=log_id,
    )


class Manifest:
    """The entries and the offset coverage they imply; kept in memory by the running sink."""

    def __init__(self, store: LakeStore, entries: dict[str, Entry] | None = None) -> None:
        self.store = store
        self.entries: dict[str, Entry] = {}
        self._coverage: dict[tuple[str, str, str, int], list[tuple[int, int]]] = {}
        for e in (entries or {}).values():
            self._remember(e)

    # -- reading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, store: LakeStore) -> Manifest:
        entries = {}
        for rel in store.glob(f"{MANIFEST}/*/*/*.json"):
            e = Entry.from_json(store.read_bytes(rel))
            entries[e.path] = e
        return cls(store, entries)

    def files(self, topic: str | None = None) -> list[Entry]:
        return sorted((e for e in self.entries.values() if topic is None or e.topic == topic), key=lambda e: e.path)

    def covered(self, topic: str, date: str, partition: int, offset: int, log: str = "") -> bool:
        for key in {(log, topic, date, partition), ("", topic, date, partition)}:
            spans = self._coverage.get(key)
            if not spans:
                continue
            i = bisect.bisect_right(spans, (offset, float("inf"))) - 1
            if i >= 0 and spans[i][0] <= offset <= spans[i][1]:
                return True
        return False

    # -- writing ----------------------------------------------------------------------------
    def add(self, entry: Entry) -> None:
        """Record a file whose data is already durable under its final name."""
        self.store.write_atomic(entry.manifest_path, entry.to_json())
        self._remember(entry)

    def drop(self, entry: Entry) -> None:
        """Forget a file (its entry first, then the data), e.g. once compaction replaced it."""
        self.store.remove(entry.manifest_path)
        self.entries.pop(entry.path, None)
        self.store.remove(entry.path)

    def _remember(self, entry: Entry) -> None:
        self.entries[entry.path] = entry
        for partition, first, last in entry.ranges:
            key = (entry.log, entry.topic, entry.date, partition)
            spans = self._coverage.setdefault(key, [])
            bisect.insort(spans, (first, last))
            self._coverage[key] = _merge(spans)

    # -- recovery ---------------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Make the manifest agree with the files after a crash at any point; return what changed."""
        report = {"temporaries": 0, "orphans": 0, "dangling": 0, "superseded": 0}
        report["temporaries"] += self.store.remove_temporaries(f"{DATA}/*/*/*")
        report["temporaries"] += self.store.remove_temporaries(f"{MANIFEST}/*/*/*")
        on_disk = set(self.store.glob(f"{DATA}/*/*/*.parquet"))
        for path in sorted(set(self.entries) - on_disk):  # an entry whose file is gone
            entry = self.entries.pop(path)
            self.store.remove(entry.manifest_path)
            report["dangling"] += 1
        for path in sorted(on_disk - set(self.entries)):  # renamed, but crashed before its entry
            self.add(entry_from_parquet(self.store, path))
            report["orphans"] += 1
        for entry in list(self.entries.values()):  # a compaction that crashed before cleaning up
            for source in entry.sources:
                old = self.entries.get(source)
                if old is not None:
                    self.drop(old)
                    report["superseded"] += 1
                elif self.store.exists(source):
                    self.store.remove(source)
        self._rebuild_coverage()
        if any(report.values()):
            log.info("manifest reconciled", extra=report)
        return report

    def _rebuild_coverage(self) -> None:
        entries, self.entries, self._coverage = self.entries, {}, {}
        for e in entries.values():
            self._remember(e)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged

"""The sink: a batch of Kafka records → Parquet files + manifest entries, before the commit.

`handle` is the ConsumeLoop's batch handler. It skips records already covered by the manifest
(a replay after a crash, or a rewound group), groups the rest by topic, date and partition,
and writes one file per group named by its offset range. It returns only once every file and
entry is durable, so the loop's commit that follows never runs ahead of the data.

It also skips an event whose id it stored recently (the last `recent_ids` of each topic): the
same event under a new offset, which the manifest cannot see, comes from a producer re-sending
what it was not sure the broker had (ingest's outbox after a crash between the broker's
acknowledgement and its own bookkeeping; everything after a broker on memory storage restarted).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections import OrderedDict, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter

from services.events.consumer import Record
from services.lake.manifest import (
    LOG_KEY,
    RANGES_KEY,
    SOURCES_KEY,
    Entry,
    Manifest,
    batch_name,
    compacted_name,
    data_path,
)
from services.lake.rows import SCHEMAS, event_date, to_table

log = logging.getLogger(__name__)

ROWS_WRITTEN = Counter("flywheel_lake_rows_written_total", "Rows written to Parquet", ["topic"])
ROWS_SKIPPED = Counter("flywheel_lake_rows_skipped_total", "Replayed records already in the lake", ["topic"])
FILES_WRITTEN = Counter("flywheel_lake_files_written_total", "Parquet files written", ["topic", "kind"])
ROWS_IGNORED = Counter(
    "flywheel_lake_rows_ignored_total",
    "Records deliberately not stored: synthetic labels and predictions (load tests) are not production data",
    ["topic", "reason"],
)


def synthetic(record: Record) -> bool:
    """A load test's label or prediction (LabelEvent.synthetic, PredictionLog.synthetic)."""
    return bool(getattr(record.event, "synthetic", False))


def parquet_bytes(table: pa.Table, metadata: dict[bytes, bytes]) -> bytes:
    """Deterministic Parquet bytes: the same table and metadata always give the same file."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=64_000, write_statistics=True)
    return buf.getvalue()


class LakeSink:
    def __init__(
        self,
        manifest: Manifest,
        lock: threading.RLock,
        compact_min_files: int = 8,
        compact_small_rows: int = 50_000,
        recent_ids: int = 200_000,
    ) -> None:
        self.manifest = manifest
        self.store = manifest.store
        self.lock = lock
        self.compact_min_files = compact_min_files
        self.compact_small_rows = compact_small_rows
        self.recent_ids = recent_ids
        self._recent: dict[str, OrderedDict[str, None]] = {}  # topic -> event ids, oldest first

    def handle(self, records: list[Record]) -> None:
        groups: dict[tuple[str, str, int, str], list[Record]] = defaultdict(list)
        with self.lock:
            for r in records:
                if r.topic not in SCHEMAS:
                    continue
                date = event_date(r)
                if self.manifest.covered(r.topic, date, r.partition, r.offset, r.log):
                    ROWS_SKIPPED.labels(r.topic).inc()
                    continue
                groups[(r.topic, date, r.partition, r.log)].append(r)
            for (topic, date, partition, log_id), recs in sorted(groups.items()):
                self._write_batch(topic, date, partition, log_id, recs)

    def _recent_ids(self, topic: str) -> OrderedDict[str, None]:
        """The topic's most recently stored event ids, read from its newest files the first time."""
        recent = self._recent.get(topic)
        if recent is None:
            ids: list[str] = []
            for entry in reversed(self.manifest.files(topic)):  # paths sort by date: newest last
                if len(ids) >= self.recent_ids:
                    break
                table = pq.read_table(io.BytesIO(self.store.read_bytes(entry.path)), columns=["event_id"])
                ids.extend(reversed(table.column("event_id").to_pylist()))
            recent = OrderedDict.fromkeys(reversed(ids[: self.recent_ids]))
            self._recent[topic] = recent
        return recent

    def _write_batch(self, topic: str, date: str, partition: int, log_id: str, records: list[Record]) -> None:
        first, last = min(r.offset for r in records), max(r.offset for r in records)
        ranges = [(partition, first, last)]  # covers the ignored records too: a replay skips them again
        recent = self._recent_ids(topic)
        fresh, batch_ids = [], set()
        for r in records:
            event_id = r.event.meta.event_id  # type: ignore[attr-defined]
            if event_id in recent or event_id in batch_ids:
                ROWS_SKIPPED.labels(topic).inc()
                continue
            batch_ids.add(event_id)
            fresh.append(r)
        records = fresh
        kept = [r for r in records if not synthetic(r)]
        if len(kept) < len(records):
            ROWS_IGNORED.labels(topic, "synthetic").inc(len(records) - len(kept))
        if not kept:
            return
        records = kept
        meta = {RANGES_KEY: json.dumps(ranges).encode(), LOG_KEY: log_id.encode()}
        data = parquet_bytes(to_table(topic, records), meta)
        entry = Entry(
            path=data_path(topic, date, batch_name(partition, first, last, log_id)),
            topic=topic,
            date=date,
            rows=len(records),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            ranges=ranges,
            log=log_id,
        )
        self.store.write_atomic(entry.path, data)  # 1. the data, under its final name
        self.manifest.add(entry)  # 2. its entry; the loop commits after we return
        recent.update((r.event.meta.event_id, None) for r in records)  # type: ignore[attr-defined]
        while len(recent) > self.recent_ids:
            recent.popitem(last=False)
        ROWS_WRITTEN.labels(topic).inc(len(records))
        FILES_WRITTEN.labels(topic, "batch").inc()

    # -- compaction -------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge each topic/date's small files into one; return how many files were replaced."""
        replaced = 0
        with self.lock:
            # Per log too: a file's offset ranges are positions in one broker log.
            by_day: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
            for e in self.manifest.files():
                if e.rows < self.compact_small_rows:
                    by_day[(e.topic, e.date, e.log)].append(e)
            for (topic, date, log_id), small in sorted(by_day.items()):
                if len(small) >= self.compact_min_files:
                    self._merge(topic, date, log_id, small)
                    replaced += len(small)
        return replaced

    def _merge(self, topic: str, date: str, log_id: str, entries: list[Entry]) -> None:
        tables = [
            pq.read_table(io.BytesIO(self.store.read_bytes(e.path))).replace_schema_metadata(None) for e in entries
        ]
        table = pa.concat_tables(tables).sort_by([("_partition", "ascending"), ("_offset", "ascending")])
        sources = sorted(e.path for e in entries)
        ranges = sorted(r for e in entries for r in e.ranges)
        meta = {
            RANGES_KEY: json.dumps(ranges).encode(),
            SOURCES_KEY: json.dumps(sources).encode(),
            LOG_KEY: log_id.encode(),
        }
        data = parquet_bytes(table.cast(SCHEMAS[topic]), meta)
        entry = Entry(
            path=data_path(topic, date, compacted_name(sources)),
            topic=topic,
            date=date,
            rows=table.num_rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            ranges=ranges,  # type: ignore[arg-type]
            sources=sources,
            log=log_id,
        )
        self.store.write_atomic(entry.path, data)
        self.manifest.add(entry)
        for old in entries:  # readers dedupe by event_id, so the overlap until here is harmless
            self.manifest.drop(old)
        FILES_WRITTEN.labels(topic, "compacted").inc()
        log.info("compacted", extra={"topic": topic, "date": date, "files": len(entries), "rows": table.num_rows})

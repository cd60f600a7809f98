"""The sink: a batch of Kafka records → Parquet files + manifest entries, before the commit.

`handle` is the ConsumeLoop's batch handler. It skips records already covered by the manifest
(a replay after a crash, or a rewound group), groups the rest by topic, date and partition,
and writes one file per group named by its offset range. It returns only once every file and
entry is durable, so the loop's commit that follows never runs ahead of the data.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter

from services.events.consumer import Record
from services.lake.manifest import (
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
    ) -> None:
        self.manifest = manifest
        self.store = manifest.store
        self.lock = lock
        self.compact_min_files = compact_min_files
        self.compact_small_rows = compact_small_rows

    def handle(self, records: list[Record]) -> None:
        groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
        with self.lock:
            for r in records:
                if r.topic not in SCHEMAS:
                    continue
                date = event_date(r)
                if self.manifest.covered(r.topic, date, r.partition, r.offset):
                    ROWS_SKIPPED.labels(r.topic).inc()
                    continue
                groups[(r.topic, date, r.partition)].append(r)
            for (topic, date, partition), recs in sorted(groups.items()):
                self._write_batch(topic, date, partition, recs)

    def _write_batch(self, topic: str, date: str, partition: int, records: list[Record]) -> None:
        first, last = min(r.offset for r in records), max(r.offset for r in records)
        ranges = [(partition, first, last)]  # covers the ignored records too: a replay skips them again
        kept = [r for r in records if not synthetic(r)]
        if len(kept) < len(records):
            ROWS_IGNORED.labels(topic, "synthetic").inc(len(records) - len(kept))
        if not kept:
            return
        records = kept
        data = parquet_bytes(to_table(topic, records), {RANGES_KEY: json.dumps(ranges).encode()})
        entry = Entry(
            path=data_path(topic, date, batch_name(partition, first, last)),
            topic=topic,
            date=date,
            rows=len(records),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            ranges=ranges,
        )
        self.store.write_atomic(entry.path, data)  # 1. the data, under its final name
        self.manifest.add(entry)  # 2. its entry; the loop commits after we return
        ROWS_WRITTEN.labels(topic).inc(len(records))
        FILES_WRITTEN.labels(topic, "batch").inc()

    # -- compaction -------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge each topic/date's small files into one; return how many files were replaced."""
        replaced = 0
        with self.lock:
            by_day: dict[tuple[str, str], list[Entry]] = defaultdict(list)
            for e in self.manifest.files():
                if e.rows < self.compact_small_rows:
                    by_day[(e.topic, e.date)].append(e)
            for (topic, date), small in sorted(by_day.items()):
                if len(small) >= self.compact_min_files:
                    self._merge(topic, date, small)
                    replaced += len(small)
        return replaced

    def _merge(self, topic: str, date: str, entries: list[Entry]) -> None:
        tables = [
            pq.read_table(io.BytesIO(self.store.read_bytes(e.path))).replace_schema_metadata(None) for e in entries
        ]
        table = pa.concat_tables(tables).sort_by([("_partition", "ascending"), ("_offset", "ascending")])
        sources = sorted(e.path for e in entries)
        ranges = sorted(r for e in entries for r in e.ranges)
        meta = {RANGES_KEY: json.dumps(ranges).encode(), SOURCES_KEY: json.dumps(sources).encode()}
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
        )
        self.store.write_atomic(entry.path, data)
        self.manifest.add(entry)
        for old in entries:  # readers dedupe by event_id, so the overlap until here is harmless
            self.manifest.drop(old)
        FILES_WRITTEN.labels(topic, "compacted").inc()
        log.info("compacted", extra={"topic": topic, "date": date, "files": len(entries), "rows": table.num_rows})

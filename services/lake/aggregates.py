"""Aggregates over the lake with DuckDB: latest labels, distribution, per-class feature stats,
live accuracy (predictions joined with labels on example_id), per-topic stats.

Every query reads the files the manifest lists and drops duplicate event_ids (a compaction in
flight or a producer's replay), keeping the earliest (partition, offset). A local lake is read by
DuckDB itself; an object-store lake (`s3://`) is read through fsspec and pyarrow and handed to DuckDB
as Arrow tables (DuckDB's own S3 reader, the httpfs extension, is downloaded at run time and cannot be
on an air-gapped machine).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from services.events.topics import LABELS, PREDICTIONS
from services.lake.errors import LakeUnavailable
from services.lake.manifest import Manifest
from services.lake.rows import SCHEMAS
from services.lake.store import LakeStore

LABEL_TIME = "coalesce(updated_at, event_time)"
R = TypeVar("R")


def retrying(fn: Callable[..., R]) -> Callable[..., R]:
    """Retry a query whose files vanished under it (another process compacted them): a fresh
    read of the manifest lists the files that replaced them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except LakeUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return wrapper


@dataclass(frozen=True)
class LabelFilter:
    labels: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    as_of: dt.datetime | None = None
    project: str = ""  # empty: every project


@dataclass(frozen=True)
class ClassStats:
    label: str
    count: int
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]


@dataclass(frozen=True)
class ModelAccuracy:
    model: str
    model_version: str
    predictions: int
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.labelled if self.labelled else 0.0


@dataclass(frozen=True)
class TopicStats:
    topic: str
    rows: int
    files: int
    distinct_events: int


class Aggregates:
    """Queries over a lake; `manifest()` gives the files to read (the sink's own, or a fresh load)."""

    def __init__(self, store: LakeStore, manifest: Callable[[], Manifest], lock: threading.RLock | None = None) -> None:
        self.store = store
        self._manifest = manifest
        self._lock = lock or threading.RLock()

    @contextlib.contextmanager
    def connect(self, flt: LabelFilter = LabelFilter()) -> Iterator[tuple[duckdb.DuckDBPyConnection, Manifest]]:
        """A DuckDB connection with views labels, latest, live and predictions (deduplicated)."""
        with self._lock:  # compaction cannot delete a file while a query reads it
            manifest = self._manifest()
            con = duckdb.connect()
            try:
                con.execute("SET threads TO 2")
                for view, topic in (("labels_all", LABELS.name), ("predictions_all", PREDICTIONS.name)):
                    self._register(con, view, topic, manifest)
                con.execute(
                    "CREATE TEMP VIEW labels AS SELECT * FROM labels_all "
                    "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _partition, _offset) = 1"
                )
                con.execute(
                    "CREATE TEMP VIEW predictions AS SELECT * FROM predictions_all "
                    "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _partition, _offset) = 1"
                )
                # The latest event per example of a project decides: an update replaces, a delete removes.
                as_of = (
                    "" if flt.as_of is None else f"WHERE {LABEL_TIME} <= TIMESTAMPTZ {_literal(flt.as_of.isoformat())}"
                )
                con.execute(
                    f"CREATE TEMP TABLE latest AS SELECT * FROM labels {as_of} QUALIFY row_number() OVER "
                    f"(PARTITION BY project, example_id ORDER BY {LABEL_TIME} DESC, event_time DESC, _offset DESC) = 1"
                )
                con.execute("CREATE TEMP VIEW live AS SELECT * FROM latest WHERE action <> 'deleted'")
                yield con, manifest
            except duckdb.IOException as exc:
                raise LakeUnavailable(f"cannot read the lake at {self.store.url}: {exc}") from exc
            finally:
                con.close()

    def _register(self, con: duckdb.DuckDBPyConnection, view: str, topic: str, manifest: Manifest) -> None:
        entries = manifest.files(topic)
        # Files written before a column existed (project, content_type) read it as NULL.
        cols = ", ".join(
            f"coalesce({f.name}, '') AS {f.name}" if f.name in ("project", "content_type") else f.name
            for f in SCHEMAS[topic]
        )
        if entries and not self.store.local:
            con.register(f"{view}_arrow", self._read_remote(topic, [e.path for e in entries]))
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT {cols} FROM {view}_arrow")
        elif entries:
            listed = ", ".join(_literal(self.store.full(e.path)) for e in entries)
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT {cols} FROM read_parquet([{listed}], union_by_name = true)")
        else:
            con.register(f"{view}_empty", SCHEMAS[topic].empty_table())
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {view}_empty")

    def _read_remote(self, topic: str, paths: list[str]) -> pa.Table:
        """The files as one Arrow table with every column of the topic's schema (missing ones NULL)."""
        schema = SCHEMAS[topic]
        tables = []
        for path in paths:
            try:
                table = pq.read_table(io.BytesIO(self.store.read_bytes(path)))
            except (OSError, pa.ArrowInvalid) as exc:  # compacted away under us, or unreadable: retried
                raise LakeUnavailable(f"cannot read {self.store.url_of(path)}: {exc}") from exc
            for f in schema:
                if f.name not in table.column_names:
                    table = table.append_column(f, pa.nulls(table.num_rows, f.type))
            tables.append(table.select(schema.names).cast(schema))
        return pa.concat_tables(tables)

    # -- queries ----------------------------------------------------------------------------
    @retrying
    def label_distribution(self, project: str = "") -> dict[str, int]:
        """Live labelled examples per label (of one project, or of all)."""
        with self.connect() as (con, _):
            rows = con.sql(
                "SELECT label, count(*) FROM live WHERE $project = '' OR project = $project "
                "GROUP BY label ORDER BY label",
                params={"project": project},
            ).fetchall()
        return {str(label): int(n) for label, n in rows}

    @retrying
    def project_labels(self) -> list[tuple[str, str, int]]:
        """(project, label, live examples) for every project: what the lake's gauges show."""
        with self.connect() as (con, _):
            rows = con.execute(
                "SELECT project, label, count(*) FROM live GROUP BY project, label ORDER BY project, label"
            ).fetchall()
        return [(str(p), str(label), int(n)) for p, label, n in rows]

    @retrying
    def latest_labels(self, example_ids: list[str] | None = None, limit: int = 1000) -> tuple[list[dict], int]:
        with self.connect() as (con, _):
            total = int(con.execute("SELECT count(*) FROM live").fetchall()[0][0])
            sql = (
                f"SELECT example_id, label, source, object_uri, sha256, {LABEL_TIME} AS updated_at, event_id FROM live"
            )
            params: dict[str, object] = {"limit": limit}
            if example_ids:
                sql += " WHERE example_id IN (SELECT unnest($ids))"
                params["ids"] = example_ids
            rows = con.sql(sql + " ORDER BY example_id LIMIT $limit", params=params).to_arrow_table().to_pylist()
        return rows, total

    @retrying
    def feature_stats(self, project: str = "") -> list[ClassStats]:
        """Per label, per feature: count, mean, std, min, max (NaN, a null, left out), of one project or all."""
        with self.connect() as (con, _):
            mine = "WHERE $project = '' OR project = $project"
            rows = con.sql(
                "SELECT label, i, count(*), avg(v), stddev_pop(v), min(v), max(v) FROM ("
                f"  SELECT label, unnest(features) AS v, unnest(range(len(features))) AS i FROM live {mine}"
                ") WHERE NOT isnan(v) GROUP BY label, i ORDER BY label, i",
                params={"project": project},
            ).fetchall()
            counts = dict(
                con.sql(
                    f"SELECT label, count(*) FROM live {mine} GROUP BY label", params={"project": project}
                ).fetchall()
            )
        out: dict[str, ClassStats] = {}
        for label, _i, _n, mean, std, lo, hi in rows:
            s = out.setdefault(label, ClassStats(label, int(counts[label]), [], [], [], []))
            s.mean.append(float(mean))
            s.std.append(float(std or 0.0))
            s.min.append(float(lo))
            s.max.append(float(hi))
        return [out[k] for k in sorted(out)]

    @retrying
    def live_accuracy(self) -> list[ModelAccuracy]:
        """Per model version: predictions, those whose example has a live label, and correct ones."""
        with self.connect() as (con, _):
            rows = con.execute(
                "SELECT p.model, p.model_version, count(*), count(l.example_id), "
                "  count(*) FILTER (WHERE l.example_id IS NOT NULL AND "
                "    coalesce(nullif(p.predicted_label, ''), CAST(p.predicted_class AS VARCHAR)) = l.label) "
                "FROM predictions p LEFT JOIN live l ON p.example_id <> '' AND p.example_id = l.example_id "
                "  AND (p.project = l.project OR p.project = '' OR l.project = '') "
                "GROUP BY p.model, p.model_version ORDER BY p.model, p.model_version"
            ).fetchall()
        return [ModelAccuracy(str(m), str(v), int(n), int(lab), int(ok)) for m, v, n, lab, ok in rows]

    @retrying
    def topic_stats(self) -> list[TopicStats]:
        with self.connect() as (con, manifest):
            out = []
            for view, topic in (("labels", LABELS.name), ("predictions", PREDICTIONS.name)):
                files = manifest.files(topic)
                distinct = int(con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])
                out.append(TopicStats(topic, sum(e.rows for e in files), len(files), distinct))
        return out

    @retrying
    def live_table(self, flt: LabelFilter) -> pa.Table:
        """The live labelled examples that pass the filter, in the snapshot's columns."""
        with self.connect(flt) as (con, _):
            where, params = _filter_sql(flt)
            return con.sql(
                "SELECT example_id, label, CAST(features AS FLOAT[]) AS features, object_uri, sha256, "
                f"{LABEL_TIME} AS updated_at, content_type FROM live WHERE true {where} ORDER BY example_id",
                params=params or None,
            ).to_arrow_table()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _filter_sql(flt: LabelFilter) -> tuple[str, dict[str, object]]:
    clauses, params = [], {}
    if flt.labels:
        clauses.append("AND label IN (SELECT unnest($labels))")
        params["labels"] = list(flt.labels)
    if flt.sources:
        clauses.append("AND source IN (SELECT unnest($sources))")
        params["sources"] = list(flt.sources)
    if flt.project:
        clauses.append("AND project = $project")
        params["project"] = flt.project
    return " ".join(clauses), params

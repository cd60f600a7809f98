"""The lake's transport-free API: typed in, typed out; the REST and gRPC adapters call only this."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from services.lake.aggregates import Aggregates, ClassStats, LabelFilter, ModelAccuracy, TopicStats
from services.lake.errors import InvalidRequest
from services.lake.snapshots import Snapshots, SplitSpec

log = logging.getLogger(__name__)

ROWS = Gauge("flywheel_lake_rows", "Rows in the lake's Parquet files", ["topic"])
FILES = Gauge("flywheel_lake_files", "Parquet files in the lake", ["topic"])
LABELS = Gauge("flywheel_lake_label_count", "Live labelled examples per project and label", ["project", "label"])
PREDICTIONS = Gauge("flywheel_lake_predictions", "Logged predictions per model version", ["model", "version"])
LABELLED = Gauge("flywheel_lake_labelled_predictions", "Predictions whose example has a label", ["model", "version"])
ACCURACY = Gauge("flywheel_lake_live_accuracy", "Accuracy of predictions against later labels", ["model", "version"])
SNAPSHOTS = Gauge("flywheel_lake_snapshots", "Snapshots in the lake")


class LakeDataPlane:
    def __init__(self, aggregates: Aggregates, snapshots: Snapshots) -> None:
        self.aggregates = aggregates
        self.snapshots = snapshots
        self._gauge_lock = threading.Lock()

    # -- aggregates -------------------------------------------------------------------------
    def label_distribution(self, project: str = "") -> dict[str, int]:
        return self.aggregates.label_distribution(project)

    def latest_labels(self, example_ids: list[str], limit: int) -> tuple[list[dict], int]:
        if limit < 0 or limit > 100_000:
            raise InvalidRequest(f"limit must be within 0..100000 (0 means 1000), got {limit}")
        return self.aggregates.latest_labels(example_ids or None, limit or 1000)

    def feature_stats(self, project: str = "") -> list[ClassStats]:
        return self.aggregates.feature_stats(project)

    def live_accuracy(self) -> list[ModelAccuracy]:
        return self.aggregates.live_accuracy()

    def stats(self) -> list[TopicStats]:
        return self.aggregates.topic_stats()

    # -- snapshots --------------------------------------------------------------------------
    def create_snapshot(
        self,
        labels: list[str],
        sources: list[str],
        as_of: dt.datetime | None,
        split: SplitSpec,
        description: str = "",
        project: str = "",
    ) -> dict[str, Any]:
        if as_of is not None and as_of.tzinfo is None:
            raise InvalidRequest("as_of must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        flt = LabelFilter(tuple(sorted(set(labels))), tuple(sorted(set(sources))), as_of, project)
        manifest = self.snapshots.create(flt, split, description)
        log.info("snapshot", extra={"snapshot_id": manifest["snapshot_id"], "rows": manifest["rows_per_split"]})
        return manifest

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        return self.snapshots.get(snapshot_id)

    def list_snapshots(self) -> list[dict[str, Any]]:
        return self.snapshots.list()

    def diff_snapshots(self, base: str, other: str) -> dict[str, Any]:
        return self.snapshots.diff(base, other)

    def snapshot_uri(self, snapshot_id: str) -> str:
        return self.snapshots.uri(snapshot_id)

    def copy_snapshot(self, snapshot_id: str, dest: Path) -> Path:
        return self.snapshots.copy(snapshot_id, dest)

    # -- gauges -----------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        """Recompute the Prometheus gauges from the lake (called periodically and on demand)."""
        with self._gauge_lock:
            for t in self.stats():
                ROWS.labels(t.topic).set(t.rows)
                FILES.labels(t.topic).set(t.files)
            LABELS.clear()
            for project, label, n in self.aggregates.project_labels():
                LABELS.labels(project, label).set(n)
            for m in self.live_accuracy():
                PREDICTIONS.labels(m.model, m.model_version).set(m.predictions)
                LABELLED.labels(m.model, m.model_version).set(m.labelled)
                ACCURACY.labels(m.model, m.model_version).set(m.accuracy)
            SNAPSHOTS.set(len(self.list_snapshots()))

"""gRPC adapter for flywheel.v1.Lake: convert, call the dataplane, convert back."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.genproto.flywheel.v1 import lake_pb2 as pb
from services.genproto.flywheel.v1 import lake_pb2_grpc as pb_grpc
from services.lake.dataplane import LakeDataPlane
from services.lake.errors import LakeError
from services.lake.snapshots import SplitSpec
from services.lake.transport.status import status_of

log = logging.getLogger(__name__)
T = TypeVar("T")
LIST_CAP = 1000


def _ts(value: Any) -> Timestamp:
    ts = Timestamp()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        ts.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    return ts


def snapshot_pb(manifest: dict[str, Any], uri: str) -> pb.Snapshot:
    return pb.Snapshot(
        snapshot_id=manifest["snapshot_id"],
        created_at=_ts(manifest["created_at"]),
        files=[pb.SnapshotFile(**f) for f in manifest["files"]],
        rows_per_split=manifest["rows_per_split"],
        label_counts=manifest["label_counts"],
        code_version=manifest["code_version"],
        uri=uri,
        description=manifest.get("description", ""),
    )


class LakeServicer(pb_grpc.LakeServicer):
    def __init__(self, dp: LakeDataPlane) -> None:
        self._dp = dp

    def _call(self, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except LakeError as exc:
            context.abort(status_of(exc)[1], str(exc))
            raise  # unreachable: abort raises

    def CreateSnapshot(self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext) -> pb.Snapshot:
        s = request.split
        spec = SplitSpec(s.train, s.validation, s.test, s.salt) if request.HasField("split") else SplitSpec()
        spec = SplitSpec(spec.train, spec.validation, spec.test, spec.salt or "flywheel")
        as_of = request.as_of.ToDatetime(dt.UTC) if request.HasField("as_of") else None

        def create() -> pb.Snapshot:
            m = self._dp.create_snapshot(list(request.labels), list(request.sources), as_of, spec, request.description)
            return snapshot_pb(m, self._dp.snapshot_uri(m["snapshot_id"]))

        return self._call(context, create)

    def GetSnapshot(self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext) -> pb.Snapshot:
        return self._call(
            context,
            lambda: snapshot_pb(self._dp.get_snapshot(request.snapshot_id), self._dp.snapshot_uri(request.snapshot_id)),
        )

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        def listing() -> pb.ListSnapshotsResponse:
            found = self._dp.list_snapshots()
            return pb.ListSnapshotsResponse(
                snapshots=[snapshot_pb(m, self._dp.snapshot_uri(m["snapshot_id"])) for m in found]
            )

        return self._call(context, listing)

    def LabelDistribution(
        self, request: pb.LabelDistributionRequest, context: grpc.ServicerContext
    ) -> pb.LabelDistributionResponse:
        return self._call(context, lambda: pb.LabelDistributionResponse(counts=self._dp.label_distribution()))

    def DiffSnapshots(self, request: pb.DiffSnapshotsRequest, context: grpc.ServicerContext) -> pb.SnapshotDiff:
        def diff() -> pb.SnapshotDiff:
            d = self._dp.diff_snapshots(request.base, request.other)
            return pb.SnapshotDiff(
                base=d["base"],
                other=d["other"],
                added=d["added"][:LIST_CAP],
                removed=d["removed"][:LIST_CAP],
                relabelled=[pb.LabelChange(**c) for c in d["relabelled"][:LIST_CAP]],
                added_count=len(d["added"]),
                removed_count=len(d["removed"]),
                relabelled_count=len(d["relabelled"]),
                moved_split_count=d["moved_split"],
                rows_per_split_delta=d["rows_per_split_delta"],
                label_counts_delta=d["label_counts_delta"],
                same_code_version=d["same_code_version"],
            )

        return self._call(context, diff)

    def LatestLabels(self, request: pb.LatestLabelsRequest, context: grpc.ServicerContext) -> pb.LatestLabelsResponse:
        def latest() -> pb.LatestLabelsResponse:
            rows, total = self._dp.latest_labels(list(request.example_ids), request.limit)
            return pb.LatestLabelsResponse(
                labels=[pb.LatestLabel(**{**r, "updated_at": _ts(r["updated_at"])}) for r in rows], total=total
            )

        return self._call(context, latest)

    def FeatureStats(self, request: pb.FeatureStatsRequest, context: grpc.ServicerContext) -> pb.FeatureStatsResponse:
        return self._call(
            context,
            lambda: pb.FeatureStatsResponse(
                classes=[
                    pb.ClassFeatureStats(label=s.label, count=s.count, mean=s.mean, std=s.std, min=s.min, max=s.max)
                    for s in self._dp.feature_stats()
                ]
            ),
        )

    def LiveAccuracy(self, request: pb.LiveAccuracyRequest, context: grpc.ServicerContext) -> pb.LiveAccuracyResponse:
        return self._call(
            context,
            lambda: pb.LiveAccuracyResponse(
                models=[
                    pb.ModelAccuracy(
                        model=m.model,
                        model_version=m.model_version,
                        predictions=m.predictions,
                        labelled=m.labelled,
                        correct=m.correct,
                        accuracy=m.accuracy,
                    )
                    for m in self._dp.live_accuracy()
                ]
            ),
        )

    def LakeStats(self, request: pb.LakeStatsRequest, context: grpc.ServicerContext) -> pb.LakeStatsResponse:
        return self._call(
            context,
            lambda: pb.LakeStatsResponse(
                topics=[
                    pb.TopicStats(topic=t.topic, rows=t.rows, files=t.files, distinct_events=t.distinct_events)
                    for t in self._dp.stats()
                ]
            ),
        )


def serve_grpc(dp: LakeDataPlane, host: str, port: int, workers: int = 4) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"))
    pb_grpc.add_LakeServicer_to_server(LakeServicer(dp), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind gRPC on {host}:{port}")
    server.start()
    return server, bound

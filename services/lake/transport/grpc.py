"""gRPC adapter for flywheel.v1.Lake: convert, call the dataplane, convert back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.genproto.flywheel.v1 import lake_pb2 as pb
from services.genproto.flywheel.v1 import lake_pb2_grpc as pb_grpc
from services.lake.dataplane import LakeDataPlane
from services.lake.errors import InvalidRequest
from services.lake.snapshots import SplitSpec
from services.lake.transport.status import ERRORS
from services.transportkit.auth import GrpcCallerCheck
from services.transportkit.bootstrap import Security
from services.transportkit.grpc import StrictParsing, guarded

log = logging.getLogger(__name__)
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
        project=manifest.get("project", ""),
    )


def _as_of(request: pb.CreateSnapshotRequest) -> dt.datetime:
    try:
        return request.as_of.ToDatetime(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"as_of is not a valid time: {exc}") from None


class LakeServicer(pb_grpc.LakeServicer):
    def __init__(self, dataplane: LakeDataPlane) -> None:
        self._dataplane = dataplane

    def _snapshot(self, manifest: dict[str, Any]) -> pb.Snapshot:
        return snapshot_pb(manifest, self._dataplane.snapshot_uri(manifest["snapshot_id"]))

    @guarded(ERRORS)
    def CreateSnapshot(self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext) -> pb.Snapshot:
        s = request.split
        spec = SplitSpec(s.train, s.validation, s.test, s.salt) if request.HasField("split") else SplitSpec()
        spec = SplitSpec(spec.train, spec.validation, spec.test, spec.salt or "flywheel")
        as_of = _as_of(request) if request.HasField("as_of") else None
        labels, sources = list(request.labels), list(request.sources)
        return self._snapshot(
            self._dataplane.create_snapshot(labels, sources, as_of, spec, request.description, request.project)
        )

    @guarded(ERRORS)
    def GetSnapshot(self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext) -> pb.Snapshot:
        return self._snapshot(self._dataplane.get_snapshot(request.snapshot_id))

    @guarded(ERRORS)
    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        return pb.ListSnapshotsResponse(snapshots=[self._snapshot(m) for m in self._dataplane.list_snapshots()])

    @guarded(ERRORS)
    def LabelDistribution(
        self, request: pb.LabelDistributionRequest, context: grpc.ServicerContext
    ) -> pb.LabelDistributionResponse:
        return pb.LabelDistributionResponse(counts=self._dataplane.label_distribution())

    @guarded(ERRORS)
    def DiffSnapshots(self, request: pb.DiffSnapshotsRequest, context: grpc.ServicerContext) -> pb.SnapshotDiff:
        d = self._dataplane.diff_snapshots(request.base, request.other)
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

    @guarded(ERRORS)
    def LatestLabels(self, request: pb.LatestLabelsRequest, context: grpc.ServicerContext) -> pb.LatestLabelsResponse:
        rows, total = self._dataplane.latest_labels(list(request.example_ids), request.limit)
        return pb.LatestLabelsResponse(
            labels=[pb.LatestLabel(**{**r, "updated_at": _ts(r["updated_at"])}) for r in rows], total=total
        )

    @guarded(ERRORS)
    def FeatureStats(self, request: pb.FeatureStatsRequest, context: grpc.ServicerContext) -> pb.FeatureStatsResponse:
        return pb.FeatureStatsResponse(
            classes=[
                pb.ClassFeatureStats(label=s.label, count=s.count, mean=s.mean, std=s.std, min=s.min, max=s.max)
                for s in self._dataplane.feature_stats()
            ]
        )

    @guarded(ERRORS)
    def LiveAccuracy(self, request: pb.LiveAccuracyRequest, context: grpc.ServicerContext) -> pb.LiveAccuracyResponse:
        return pb.LiveAccuracyResponse(
            models=[
                pb.ModelAccuracy(**dataclasses.asdict(m), accuracy=m.accuracy) for m in self._dataplane.live_accuracy()
            ]
        )

    @guarded(ERRORS)
    def LakeStats(self, request: pb.LakeStatsRequest, context: grpc.ServicerContext) -> pb.LakeStatsResponse:
        return pb.LakeStatsResponse(
            topics=[
                pb.TopicStats(topic=t.topic, rows=t.rows, files=t.files, distinct_events=t.distinct_events)
                for t in self._dataplane.stats()
            ]
        )


def serve_grpc(
    dataplane: LakeDataPlane, host: str, port: int, security: Security, workers: int = 4
) -> tuple[grpc.Server, int]:
    """The gRPC server, started; every RPC needs a trusted caller's credential (the trainer, operators)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[GrpcCallerCheck(security.callers), StrictParsing()],
    )
    pb_grpc.add_LakeServicer_to_server(LakeServicer(dataplane), server)
    bound = security.tls.add_port(server, f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind gRPC on {host}:{port}")
    server.start()
    return server, bound

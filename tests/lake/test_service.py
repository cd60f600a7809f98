"""The lake process end to end: aggregates and snapshots over gRPC and HTTP, Prometheus gauges,
clear errors for bad requests, and the `flywheel snapshot` CLI (over gRPC and on the root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.genproto.flywheel.v1 import lake_pb2 as pb
from services.genproto.flywheel.v1 import lake_pb2_grpc as pb_grpc
from services.transportkit.auth import authenticated_channel
from tests.lake.conftest import metric, start_lake, wait_rows
from tests.lake.events import LABELS, PREDICTIONS, label_event, prediction
from tests.support.credentials import operator, operator_token
from tests.support.waiting import wait_until


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_SERVICE_TOKEN": operator_token()}  # the lake admits the operator
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "snapshot", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_aggregates_snapshots_and_cli_over_grpc_and_http(tansu: Broker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    producer = EventProducer(tansu.bootstrap)
    for i in range(300):
        producer.send(LABELS.name, label_event(f"{run}-{i}", str(i % 10)))
    # version 1 is right on even examples, version 2 always right
    for i in range(100):
        producer.send(
            PREDICTIONS.name,
            prediction(f"{run}-a{i}", "digits", "1", f"{run}-{i}", str(i % 10 if i % 2 == 0 else (i + 1) % 10)),
        )
        producer.send(PREDICTIONS.name, prediction(f"{run}-b{i}", "digits", "2", f"{run}-{i}", str(i % 10)))
    producer.flush()
    root = tmp_path / "lake"
    lake = start_lake(tansu.bootstrap, root, f"svc-{run}", tmp_path / "home", gauges_interval_s="0.3")
    try:
        wait_rows(root, run, 500, lake)
        stub = pb_grpc.LakeStub(authenticated_channel(grpc.insecure_channel(lake.grpc), operator_token()))
        assert stub.LabelDistribution(pb.LabelDistributionRequest()).counts == {str(d): 30 for d in range(10)}
        acc = {m.model_version: m for m in stub.LiveAccuracy(pb.LiveAccuracyRequest()).models}
        assert (acc["1"].labelled, acc["1"].correct, acc["2"].accuracy) == (100, 50, 1.0)
        stats = stub.FeatureStats(pb.FeatureStatsRequest()).classes
        assert [s.count for s in stats] == [30] * 10 and len(stats[3].mean) == 64
        topics = {t.topic: t.rows for t in stub.LakeStats(pb.LakeStatsRequest()).topics}
        assert topics == {LABELS.name: 300, PREDICTIONS.name: 200}
        latest = stub.LatestLabels(pb.LatestLabelsRequest(example_ids=[f"{run}-7"]))
        assert latest.total == 300 and [(x.example_id, x.label) for x in latest.labels] == [(f"{run}-7", "7")]

        split = pb.SplitSpec(train=0.6, validation=0.2, test=0.2, salt="x")
        snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(split=split, description="all"))
        assert dict(snap.rows_per_split) == {"train": 180, "validation": 60, "test": 60}
        assert stub.CreateSnapshot(pb.CreateSnapshotRequest(split=split)).snapshot_id == snap.snapshot_id
        assert snap.uri.startswith("file://") and Path(snap.uri[7:], "profile.json").exists()
        small = stub.CreateSnapshot(pb.CreateSnapshotRequest(labels=["1", "2"], split=split))
        diff = stub.DiffSnapshots(pb.DiffSnapshotsRequest(base=snap.snapshot_id, other=small.snapshot_id))
        assert diff.removed_count == 240 and diff.added_count == 0 and diff.same_code_version
        listed = {s.snapshot_id for s in stub.ListSnapshots(pb.ListSnapshotsRequest()).snapshots}
        assert listed == {snap.snapshot_id, small.snapshot_id}

        bad = pb.SplitSpec(train=0.9, validation=0.9, test=0.0)
        for request, call, code in [
            (pb.CreateSnapshotRequest(split=bad), stub.CreateSnapshot, grpc.StatusCode.INVALID_ARGUMENT),
            (pb.CreateSnapshotRequest(labels=["none"]), stub.CreateSnapshot, grpc.StatusCode.FAILED_PRECONDITION),
            (pb.GetSnapshotRequest(snapshot_id="ab" * 10), stub.GetSnapshot, grpc.StatusCode.NOT_FOUND),
            (pb.GetSnapshotRequest(snapshot_id="x/../y"), stub.GetSnapshot, grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                call(request)
            assert err.value.code() == code, err.value.details()

        http = httpx.Client(base_url=lake.http, timeout=30, headers=operator())
        assert http.get("/v1/labels/distribution").json() == {str(d): 30 for d in range(10)}
        r = http.post("/v1/snapshots", json={"split": {"train": 2, "validation": 0, "test": 0}})
        assert r.status_code == 400 and "split.train" in r.json()["detail"]
        assert http.get(f"/v1/snapshots/{'cd' * 10}").status_code == 404
        assert http.get(f"/v1/snapshots/{snap.snapshot_id}").json()["rows_per_split"]["test"] == 60
        wait_until(lambda: metric(lake, "flywheel_lake_live_accuracy") == 1.5, 30, proc=lake.proc)
        assert metric(lake, "flywheel_lake_rows") == 500

        listing = _cli("--lake-addr", lake.grpc, "list")
        assert listing.returncode == 0 and snap.snapshot_id in listing.stdout
        shown = _cli("--root", f"file://{root}", "show", snap.snapshot_id)
        assert json.loads(shown.stdout)["rows_per_split"]["train"] == 180
        copied = _cli("--lake-addr", lake.grpc, "copy", snap.snapshot_id, str(tmp_path / "local"))
        assert copied.returncode == 0 and (tmp_path / "local" / "train.parquet").exists()
        diffed = _cli("--root", f"file://{root}", "diff", snap.snapshot_id, small.snapshot_id)
        assert len(json.loads(diffed.stdout)["removed"]) == 240
        missing = _cli("--lake-addr", lake.grpc, "show", "ef" * 10)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    finally:
        assert lake.terminate() == 0


def test_synthetic_labels_and_predictions_stay_out_of_the_lake(tansu: Broker, tmp_path: Path) -> None:
    """Load-test traffic (LabelEvent.synthetic, PredictionLog.synthetic) never becomes training or
    evaluation data; the lake counts it on flywheel_lake_rows_ignored_total instead."""
    run = uuid.uuid4().hex[:6]
    producer = EventProducer(tansu.bootstrap)
    for i in range(40):
        event = label_event(f"{run}-{i}", str(i % 10))
        event.synthetic = i % 2 == 1
        producer.send(LABELS.name, event)
        log = prediction(f"{run}-p{i}", "digits", "1", f"{run}-{i}", str(i % 10))
        log.synthetic = i % 4 != 0
        producer.send(PREDICTIONS.name, log)
    producer.flush()
    root = tmp_path / "lake"
    lake = start_lake(tansu.bootstrap, root, f"syn-{run}", tmp_path / "home")
    try:
        wait_rows(root, run, 30, lake)  # 20 production labels + 10 production predictions
        wait_until(
            lambda: metric(lake, "flywheel_lake_rows_ignored_total") == 50, 60, proc=lake.proc, message="ignored"
        )
        stub = pb_grpc.LakeStub(authenticated_channel(grpc.insecure_channel(lake.grpc), operator_token()))
        topics = {t.topic: t.rows for t in stub.LakeStats(pb.LakeStatsRequest()).topics}
        assert topics == {LABELS.name: 20, PREDICTIONS.name: 10}
        split = pb.SplitSpec(train=0.6, validation=0.2, test=0.2, salt="x")
        snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(split=split))
        assert sum(snap.rows_per_split.values()) == 20
    finally:
        assert lake.terminate() == 0

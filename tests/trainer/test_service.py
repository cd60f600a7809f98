"""The trainer as a real process: gRPC/REST API, local worker processes, a real broker, SIGTERM drain.

The lake is the one stand-in: a small in-test gRPC server implementing `flywheel.v1.Lake/CreateSnapshot`
that answers with the digits snapshot this module wrote in the lake's format (the lake service is
another branch's work; its snapshot folder format is what the trainer really reads).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest

from services.devstack.ports import free_port
from services.events import EventProducer, new_meta
from services.events.topics import MODELS, TRAIN_REQUESTS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import lake_pb2, lake_pb2_grpc, trainer_pb2_grpc
from services.genproto.flywheel.v1 import trainer_pb2 as pb
from services.transportkit.auth import authenticated_channel
from tests.support.credentials import credentials, operator, operator_token, service_env
from tests.support.kafka_reader import read_topic
from tests.support.projects import example_spec_file
from tests.support.waiting import wait_until

FAST = {"max_epochs": "15", "width": "64", "augment_shift": "0", "lr": "0.001"}


class StandInLake(lake_pb2_grpc.LakeServicer):
    def __init__(self) -> None:
        self.created: list[str] = []
        self.callers: list[str] = []  # the credential each call came with

    def CreateSnapshot(self, request, context):  # type: ignore[no-untyped-def]
        self.created.append(request.description)
        self.callers.append(dict(context.invocation_metadata()).get("authorization", ""))
        return lake_pb2.Snapshot(snapshot_id="snap-digits")


@pytest.fixture(scope="module")
def lake() -> Iterator[tuple[StandInLake, str]]:
    servicer = StandInLake()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    lake_pb2_grpc.add_LakeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, broker, lake, lake_root: Path) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("trainer")
    http, grpc_port = free_port(), free_port()
    specs = tmp / "projects"
    specs.mkdir()
    digits = example_spec_file("digits").read_text()
    for name in ("digits", "endless", "weak"):  # three projects with the digits input, for separate models
        (specs / f"{name}.yaml").write_text(digits.replace("name: digits", f"name: {name}"))
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(tmp / "home"),
        "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
        "FLYWHEEL_DATABASE_URL": f"sqlite:///{tmp / 'trainer.db'}",
        "FLYWHEEL_TRAINER_HTTP_PORT": str(http),
        "FLYWHEEL_TRAINER_GRPC_PORT": str(grpc_port),
        "FLYWHEEL_TRAINER_MODEL_REPOSITORY": str(tmp / "models"),
        "FLYWHEEL_TRAINER_LAKE_ROOT": lake_root.as_uri(),
        "FLYWHEEL_TRAINER_LAKE_ADDR": lake[1],
        "FLYWHEEL_TRAINER_ONNX_EXPORTER": "torchscript",
        "FLYWHEEL_TRAINER_MAX_CONCURRENT_JOBS": "2",
        "FLYWHEEL_TRAINER_CONSUMER_GROUP": f"trainer-{http}",
        "FLYWHEEL_TRAINER_PROJECT_FILES": str(specs),
        **service_env("trainer"),
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.trainer"], env=env)
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{http}/readyz").status_code == 200,
            timeout_s=60,
            proc=proc,
            message="trainer ready",
        )
        channel = authenticated_channel(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"), operator_token())
        yield {
            "stub": trainer_pb2_grpc.TrainerStub(channel),
            "http": http,
            "grpc": f"127.0.0.1:{grpc_port}",
            "proc": proc,
            "repo": tmp / "models",
        }
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def _wait_done(stub, job_id: str, proc, timeout_s: float = 180) -> pb.Job:  # type: ignore[no-untyped-def]
    done = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
    return wait_until(
        lambda: (j := stub.GetJob(pb.GetJobRequest(job_id=job_id))).state in done and j,
        timeout_s=timeout_s,
        proc=proc,
        message=f"job {job_id} finished",
    )


def test_submit_watch_and_publish(trainer, broker) -> None:
    stub = trainer["stub"]
    job = stub.SubmitJob(
        pb.SubmitJobRequest(model="digits", snapshot_id="snap-digits", model_family="mlp", hyperparameters=FAST)
    )
    assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING) and job.runner == "local"
    updates = list(stub.WatchJob(pb.GetJobRequest(job_id=job.job_id), timeout=240))
    phases = [u.phase for u in updates]
    assert updates[-1].state == pb.JOB_STATE_SUCCEEDED, updates[-1].message
    assert {"overfit_check", "train"} <= set(phases)
    assert [u.fraction for u in updates] == sorted(u.fraction for u in updates)
    final = stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
    assert final.model_version == "1" and final.metrics["test_accuracy"] > 0.9
    assert Path(final.report_uri.removeprefix("file://")).is_file()
    assert (trainer["repo"] / "digits" / "1" / "model.onnx").is_file()
    published = read_topic(broker.bootstrap, MODELS.name, want=1, timeout_s=30)
    event = ev.ModelPublished.FromString(published[0].value())
    assert (event.model, event.version, event.stage, event.snapshot_id) == ("digits", "1", "candidate", "snap-digits")
    cli = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "--addr", trainer["grpc"], "watch", job.job_id],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLYWHEEL_SERVICE_TOKEN": operator_token()},  # the trainer admits the operator
    )
    assert cli.returncode == 0 and "succeeded" in cli.stdout and "model digits v1" in cli.stdout, cli.stdout
    listed = stub.ListModels(pb.ListModelsRequest(model="digits")).versions
    assert [(v.version, v.stage, v.snapshot_id) for v in listed] == [("1", "candidate", "snap-digits")]
    assert listed[0].hyperparameters["max_epochs"] == "15" and listed[0].artifacts["onnx"].endswith("model.onnx")


def test_bad_requests_get_clear_errors(trainer) -> None:
    stub = trainer["stub"]
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(model="digits", snapshot_id="snap-digits", model_family="resnet"))
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown model_family 'resnet'" in err.value.details()
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(model="digits", snapshot_id="nope", model_family="mlp"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(
            pb.SubmitJobRequest(
                model="digits", snapshot_id="snap-digits", model_family="mlp", hyperparameters={"lrate": "1"}
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown hyperparameter" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(model="nobody", snapshot_id="snap-digits"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "flywheel projects create" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(model="digits", snapshot_id="snap-digits", model_family="tabular_mlp"))
    assert "takes tabular input; project 'digits' is image" in err.value.details()
    r = httpx.get(f"http://127.0.0.1:{trainer['http']}/v1/jobs/missing", headers=operator())
    assert r.status_code == 404 and r.json()["detail"] == "no job 'missing'"
    r = httpx.post(
        f"http://127.0.0.1:{trainer['http']}/v1/jobs",
        json={"snapshot_id": "snap-digits", "budget_s": -1},
        headers=operator(),
    )
    assert r.status_code == 422


def test_cancel_a_running_job(trainer) -> None:
    stub = trainer["stub"]
    endless = {**FAST, "max_epochs": "100000", "patience": "100000"}
    job = stub.SubmitJob(
        pb.SubmitJobRequest(model="endless", snapshot_id="snap-digits", model_family="mlp", hyperparameters=endless)
    )
    wait_until(
        lambda: stub.GetJob(pb.GetJobRequest(job_id=job.job_id)).phase == "train",
        timeout_s=120,
        proc=trainer["proc"],
        message="job training",
    )
    r = httpx.post(f"http://127.0.0.1:{trainer['http']}/v1/jobs/{job.job_id}/cancel", headers=operator())
    assert r.status_code == 200
    final = _wait_done(stub, job.job_id, trainer["proc"], timeout_s=60)
    assert final.state == pb.JOB_STATE_CANCELLED and final.reason == "cancelled while running"
    assert not (trainer["repo"] / "endless").exists()
    with pytest.raises(grpc.RpcError) as err:
        stub.CancelJob(pb.GetJobRequest(job_id=job.job_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_train_request_on_the_broker_becomes_a_job(trainer, broker, lake) -> None:
    stub = trainer["stub"]
    request = ev.TrainRequest(
        meta=new_meta("monitor"),
        model="weak",
        snapshot_id="",  # empty: the trainer asks the lake for a fresh snapshot
        model_family="mlp",
        hyperparameters={"max_epochs": "1", "width": "32", "lr": "0.001", "augment_shift": "0"},
        reason="drift on digits",
        caused_by="alert-1",
    )
    producer = EventProducer(broker.bootstrap)
    producer.send(TRAIN_REQUESTS.name, request)
    producer.flush()
    job_id = request.meta.event_id[:32]
    job = _wait_done(stub, job_id, trainer["proc"])
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    assert job.snapshot_id == "snap-digits" and "drift on digits" in lake[0].created
    assert lake[0].callers[-1] == credentials().bearer("trainer")["authorization"]  # it calls as itself
    # One epoch of a 32-wide MLP does not beat logistic regression: the gate refuses and says why.
    with pytest.raises(grpc.RpcError) as err:
        stub.PromoteModel(pb.PromoteModelRequest(model="weak", version=job.model_version, stage="production"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not beat the best baseline" in err.value.details()
    forced = stub.PromoteModel(
        pb.PromoteModelRequest(model="weak", version=job.model_version, stage="production", force=True)
    )
    assert forced.stage == "production"


def test_a_bad_setting_stops_the_service_before_it_listens() -> None:
    env = {**os.environ, "FLYWHEEL_TRAINER_COMBINED_METRIC": "mean", "FLYWHEEL_TRAINER_HTTP_PORT": str(free_port())}
    out = subprocess.run(
        [sys.executable, "-m", "services.trainer"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "FLYWHEEL_TRAINER_COMBINED_METRIC" in out.stderr and "use 'weighted:" in out.stderr


def test_projects_are_versioned_in_sql_and_published(trainer, broker) -> None:
    """POST /v1/projects: 201 for a new version, 200 for the same spec, 409 for a changed input, 400 listing
    every problem; each version is published on flywheel.projects for the services that follow it."""
    base = f"http://127.0.0.1:{trainer['http']}/v1/projects"
    http = httpx.Client(headers=operator(), timeout=30)  # the trainer admits trusted callers only
    spec = {
        "name": "fraud",
        "task": {"labels": ["ok", "fraud"]},
        "input": {"kind": "tabular", "columns": [{"name": "amount", "type": "float", "min": 0}]},
    }
    r = http.post(base, json=spec)
    assert r.status_code == 201 and (r.json()["version"], r.json()["created"]) == (1, True), r.text
    assert r.json()["family"] == "tabular_mlp" and r.json()["kind"] == "tabular"
    again = http.post(base, json=spec)
    assert again.status_code == 200 and again.json()["version"] == 1 and not again.json()["created"]
    tuned = {**spec, "model": {"hyperparameters": {"lr": 0.001}}, "slo": {"p99_ms": 50}}
    yaml_body = (
        "name: fraud\ntask: {labels: [ok, fraud]}\n"
        "input: {kind: tabular, columns: [{name: amount, type: float, min: 0}]}\n"
        "model: {hyperparameters: {lr: 0.001}}\nslo: {p99_ms: 50}\n"
    )
    r = http.post(base, content=yaml_body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201 and r.json()["version"] == 2
    assert r.json()["spec"]["model"]["hyperparameters"] == {"lr": "0.001"}
    assert http.post(base, json=tuned).json()["version"] == 2  # the same spec sent as JSON
    changed = {**spec, "input": {"kind": "tabular", "columns": [{"name": "amount", "type": "int"}]}}
    r = http.post(base, json=changed)
    assert r.status_code == 409 and "has a different input" in r.json()["detail"]
    bad = {"name": "Bad", "task": {"labels": ["a"]}, "input": {"kind": "tabular", "columns": []}, "extra": 1}
    r = http.post(base, json=bad)
    assert r.status_code == 400
    assert [p.split(":")[0] for p in r.json()["problems"]] == ["name", "task.labels", "input.columns", "extra"]
    listed = http.get(base).json()
    assert {p["name"]: p["version"] for p in listed}.items() >= {"digits": 1, "fraud": 2, "weak": 1}.items()
    detail = http.get(f"{base}/fraud").json()
    assert detail["version"] == 2 and [v["version"] for v in detail["versions"]] == [1, 2]
    assert http.get(f"{base}/fraud/versions/1").json()["spec"]["slo"]["p99_ms"] == 100
    assert http.get(f"{base}/nope").status_code == 404
    too_big = http.get(f"{base}/fraud/versions/{10**30}")  # found by make fuzz: once a 500 from SQL
    assert too_big.status_code in (400, 422) and "version" in too_big.text, too_big.text

    events = read_topic(
        broker.bootstrap,
        "flywheel.projects",
        want=10**6,
        timeout_s=30,
        stop_when=lambda ms: sum(m.key() == b"fraud" for m in ms) >= 2,
    )
    fraud = [ev.ProjectPublished.FromString(m.value()) for m in events if m.key() == b"fraud"]
    assert sorted({(e.name, e.version) for e in fraud}) == [("fraud", 1), ("fraud", 2)]

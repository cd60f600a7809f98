"""Kubernetes Jobs for training: manifests validated strictly, client calls against a recorded API server.

No cluster runs here, so the API server is the one thing faked: pytest-httpserver plays back the
responses a real kube-apiserver gives for these calls (status codes and bodies recorded from the
batch/v1 API), and the test checks the requests the `kubernetes` client actually sent.
"""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from pytest_httpserver import HTTPServer

from services.storage import Database, migrate
from services.trainer.errors import RunnerFailed
from services.trainer.jobs import CANCELLED, FAILED, RUNNING, JobService, JobStore
from services.trainer.projects import ProjectRegistry
from services.trainer.runners.kubernetes import KubernetesRunner, job_manifest, job_name
from services.trainer.settings import TrainerSettings
from services.trainer.tables import MIGRATIONS
from tests.support.projects import example_spec, job_project
from tests.trainer.conftest import record_job_creations

ENV = {"FLYWHEEL_HOME": "/data", "FLYWHEEL_DATABASE_URL": "postgresql+psycopg://flywheel@db/flywheel"}


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    yield JobStore(db)
    db.close()


def _service(store: JobStore, runner: KubernetesRunner) -> JobService:
    projects = ProjectRegistry(store.db)
    projects.create(example_spec("digits"))
    return JobService(
        store, {"kubernetes": runner}, "kubernetes", lambda sid: f"file:///data/lake/snapshots/{sid}", projects
    )


@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_job_manifests_are_valid_kubernetes(store, gpus: int) -> None:
    settings = TrainerSettings()
    job = store.create(
        _spec(gpus=gpus, job_id=f"Job_{gpus}"),
    )
    manifest = job_manifest(job, settings, ENV)
    kubernetes_validate.validate(manifest, "1.37.0", strict=True)  # raises on any error or unknown field
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert manifest["metadata"]["name"] == job_name(job.job_id) == f"flywheel-train-job-{gpus}"
    assert manifest["spec"]["ttlSecondsAfterFinished"] == settings.k8s_ttl_s
    assert manifest["spec"]["backoffLimit"] == settings.k8s_backoff_limit
    assert manifest["metadata"]["labels"]["flywheel.dev/job-id"] == job.job_id
    assert pod["restartPolicy"] == "Never"
    assert container["image"] == settings.k8s_image
    if gpus > 1:
        assert container["command"][:2] == ["torchrun", f"--nproc-per-node={gpus}"]
    else:
        assert container["command"][:3] == ["python", "-m", "services.trainer.worker"]
    assert container["resources"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert {e["name"]: e["value"] for e in container["env"]} == {**ENV, "FLYWHEEL_JOB_ID": job.job_id}


def _spec(gpus: int = 0, job_id: str = "job-1"):
    from services.trainer.job_run import JobSpec

    return JobSpec(
        job_id=job_id,
        model="digits",
        model_family="mlp",
        snapshot_id="snap",
        snapshot_uri="file:///data/lake/snapshots/snap",
        runner="kubernetes",
        gpus=gpus,
        **job_project(),
    )


def test_submit_creates_and_cancel_deletes_the_job(store, httpserver: HTTPServer) -> None:
    settings = TrainerSettings(k8s_api_url=httpserver.url_for("").rstrip("/"))
    path = f"/apis/batch/v1/namespaces/{settings.k8s_namespace}/jobs"
    created = record_job_creations(httpserver, settings.k8s_namespace)
    runner = KubernetesRunner.from_settings(store, settings, ENV)
    jobs = _service(store, runner)
    job = jobs.submit(model="digits", snapshot_id="snap", model_family="small_cnn", gpus=2, job_id="abc")
    assert job.state == RUNNING and job.external_id == f"k8s:flywheel/{job_name('abc')}"
    assert created[0]["metadata"]["name"] == job_name("abc")
    assert created[0]["spec"]["template"]["spec"]["containers"][0]["command"][0] == "torchrun"
    kubernetes_validate.validate(created[0], "1.37.0", strict=True)

    # The cluster reports the Job failed (backoff exhausted) before the worker could say why.
    status_path = f"{path}/{job_name('abc')}/status"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    httpserver.expect_oneshot_request(status_path, method="GET").respond_with_json({"status": {"active": 1}})
    assert jobs.get("abc").state == RUNNING
    httpserver.expect_oneshot_request(status_path, method="GET").respond_with_json(failed)
    gone = jobs.get("abc")
    assert gone.state == FAILED and "BackoffLimitExceeded" in gone.reason
    store.update("abc", only_if_not_terminal=False, state=RUNNING, reason="")

    deleted: list[dict] = []

    def delete(request):  # type: ignore[no-untyped-def]
        deleted.append(json.loads(request.data))
        from werkzeug import Response

        return Response(
            json.dumps({"kind": "Status", "status": "Success"}), status=200, content_type="application/json"
        )

    httpserver.expect_request(f"{path}/{job_name('abc')}", method="DELETE").respond_with_handler(delete)
    assert jobs.cancel("abc").state == CANCELLED
    assert deleted[0]["propagationPolicy"] == "Background"


def test_a_refused_job_is_failed_with_the_reason(store, httpserver: HTTPServer) -> None:
    settings = TrainerSettings(k8s_api_url=httpserver.url_for("").rstrip("/"))
    httpserver.expect_request(
        f"/apis/batch/v1/namespaces/{settings.k8s_namespace}/jobs", method="POST"
    ).respond_with_json(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "Forbidden",
            "message": 'jobs.batch is forbidden: User "system:serviceaccount:flywheel:trainer" cannot create',
            "code": 403,
        },
        status=403,
    )
    jobs = _service(store, KubernetesRunner.from_settings(store, settings, ENV))
    with pytest.raises(RunnerFailed, match=r"403 Forbidden: jobs\.batch is forbidden"):
        jobs.submit(model="digits", snapshot_id="snap", model_family="mlp", job_id="denied")
    job = store.get("denied")
    assert job.state == FAILED and "Kubernetes refused the Job: 403 Forbidden: jobs.batch is forbidden" in job.reason

"""The `kubernetes:` block of a project spec and a training request: each refusal with its message, the
trainer's own limits (allowed images, GPUs) refused before any job exists, and the Job it renders.

No cluster runs here: manifests are checked against the batch/v1 schema with kubernetes-validate, and
the one test that creates a Job plays the API server with pytest-httpserver (as test_kubernetes_runner).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import kubernetes_validate
import pytest
from fastapi.testclient import TestClient
from kubernetes.utils.quantity import parse_quantity as k8s_parse_quantity
from pytest_httpserver import HTTPServer

from services.projects import SpecInvalid, spec_json
from services.projects.loading import parse_spec_json, validate_document
from services.projects.spec import KubernetesSpec, parse_quantity
from services.storage import Database, migrate
from services.telemetry import Readiness
from services.trainer.errors import JobSpecInvalid
from services.trainer.job_run import JobSpec
from services.trainer.jobs import JobService, JobStore
from services.trainer.projects import ProjectRegistry
from services.trainer.runners.kubernetes import KubernetesRunner, job_manifest, job_name
from services.trainer.settings import TrainerSettings
from services.trainer.tables import MIGRATIONS
from services.trainer.transport.rest import build_app
from services.trainer.transport.status import ERRORS
from tests.support.projects import example_spec
from tests.trainer.conftest import record_job_creations

ENV = {"FLYWHEEL_HOME": "/data", "FLYWHEEL_DATABASE_URL": "postgresql+psycopg://flywheel@db/flywheel"}
K8S_VERSION = "1.37.0"


def _doc(block: object) -> dict:
    doc = json.loads(spec_json(example_spec("digits")))
    return {**doc, "kubernetes": block}


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"resources": {"limits": {"memory": "4Gb"}}}, "kubernetes.resources.limits.memory: '4Gb' is not a Kubernetes"),
        ({"resources": {"requests": {"cpu": "0"}}}, "kubernetes.resources.requests.cpu: '0' must be above zero"),
        ({"resources": {"requests": {"cpu": "-1"}}}, "kubernetes.resources.requests.cpu: '-1' must be above zero"),
        ({"resources": {"limits": {"cpu": True}}}, "kubernetes.resources.limits.cpu: True is a YAML boolean"),
        (
            {"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2500m"}}},
            "kubernetes.resources: requests.cpu 3 is above limits.cpu 2500m",
        ),
        (
            {"resources": {"requests": {"memory": "5Gi"}, "limits": {"memory": "4Gi"}}},
            "kubernetes.resources: requests.memory 5Gi is above limits.memory 4Gi",
        ),
        ({"resources": {"limits": {"gpu": "1"}}}, "kubernetes.resources.limits.gpu: unknown field"),
        ({"env": {"FLYWHEEL_HOME": "/tmp"}}, "kubernetes.env: FLYWHEEL_HOME: FLYWHEEL_* variables are set by the"),
        ({"env": {"flywheel_x": "1"}}, "kubernetes.env: flywheel_x: FLYWHEEL_* variables are set by the platform"),
        ({"env": {"1BAD": "x"}}, "kubernetes.env: '1BAD' is not a variable name"),
        ({"env": {"A-B": "x"}}, "kubernetes.env: 'A-B' is not a variable name"),
        ({"env": {"DEBUG": True}}, "kubernetes.env: DEBUG: True is a YAML boolean"),
        ({"env": {"BIG": "x" * 4097}}, "kubernetes.env: BIG: the value is over 4096 characters"),
        ({"env": {f"V{i}": "1" for i in range(65)}}, "kubernetes.env: Dictionary should have at most 64 items"),
        ({"gpus": -1}, "kubernetes.gpus: Input should be greater than or equal to 0"),
        ({"gpus": 65}, "kubernetes.gpus: Input should be less than or equal to 64"),
        ({"ttlSecondsAfterFinished": -1}, "kubernetes.ttlSecondsAfterFinished: Input should be greater than or equal"),
        ({"ttlSecondsAfterFinished": 10**7}, "kubernetes.ttlSecondsAfterFinished: Input should be less than or equal"),
        ({"activeDeadlineSeconds": 0}, "kubernetes.activeDeadlineSeconds: Input should be greater than or equal to 1"),
        ({"command": []}, "kubernetes.command: List should have at least 1 item"),
        ({"command": ["x"] * 65}, "kubernetes.command: List should have at most 64 items"),
        ({"command": [""]}, "kubernetes.command[0]: String should have at least 1 character"),
        ({"command": ["x" * 4097]}, "kubernetes.command[0]: String should have at most 4096 characters"),
        ({"args": ["--epochs", "3"]}, "kubernetes: args need a command"),
        ({"image": "ghcr.io/acme/train er:1"}, "kubernetes.image: String should match pattern"),
        ({"imagePullPolicy": "Always"}, "kubernetes.imagePullPolicy: unknown field"),
    ],
)
def test_a_bad_block_is_refused_naming_the_field(block: dict, problem: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        validate_document(_doc(block))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "value",
    [
        "2",
        "500m",
        "0.5",
        ".5",
        "1.5Gi",
        "4Gi",
        "128Mi",
        "1Ki",
        "3k",
        "2M",
        "1G",
        "1T",
        "1P",
        "1E",
        "1Ei",
        "250n",
        "100u",
        "1e3",
        "2E6",
        "1e-3",
        "+1",
        "7Ti",
        "1Pi",
    ],
)
def test_quantities_read_as_the_kubernetes_client_reads_them(value: str) -> None:
    # services/projects cannot import the client (only the trainer's image has it); the two must agree.
    assert parse_quantity(value) == k8s_parse_quantity(value)


@pytest.mark.parametrize("value", ["4Gb", "1.2.3", "Gi", "1gi", "e3", "", "1" * 65])
def test_what_the_client_refuses_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(value)
    if value and len(value) <= 64:
        with pytest.raises(ValueError):
            k8s_parse_quantity(value)


@pytest.mark.parametrize("value", ["1 Gi", "1K"])
def test_what_the_api_server_refuses_is_refused_though_the_client_reads_it(value: str) -> None:
    # resource.Quantity has no space and no upper-case K: the client's parser is looser than the server.
    k8s_parse_quantity(value)
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(value)


def test_reading_a_block_needs_no_kubernetes_package() -> None:
    # The gateway, lake, monitor and ingest images read project specs and have no kubernetes package.
    code = (
        "import sys; from services.projects.spec import KubernetesSpec; "
        "KubernetesSpec.model_validate({'resources': {'requests': {'cpu': '1'}, 'limits': {'cpu': '2Gi'}}}); "
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_good_block_reads_yaml_numbers_as_strings_and_round_trips() -> None:
    block = {
        "image": "ghcr.io/acme/train:1.2",
        "command": ["python", "train.py"],
        "args": ["--epochs", "3"],
        "resources": {"requests": {"cpu": 1, "memory": "2Gi"}, "limits": {"cpu": "1500m", "memory": "2Gi"}},
        "gpus": 2,
        "env": {"EPOCHS": 3, "MODE": "fast"},
        "ttlSecondsAfterFinished": 600,
        "activeDeadlineSeconds": 7200,
    }
    spec = validate_document(_doc(block))
    k = spec.kubernetes
    assert k is not None and k.resources is not None
    assert k.resources.requests.cpu == "1" and k.env == {"EPOCHS": "3", "MODE": "fast"}
    assert parse_spec_json(spec_json(spec)) == spec


def test_a_spec_without_the_block_keeps_its_canonical_json() -> None:
    spec = example_spec("digits")
    assert spec.kubernetes is None
    assert "kubernetes" not in json.loads(spec_json(spec))  # same bytes, same sha256, same version as before


# -- the trainer's own limits, before any job exists ------------------------------------------------
@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    yield JobStore(db)
    db.close()


def _service(store: JobStore, settings: TrainerSettings, block: dict | None = None) -> JobService:
    spec = example_spec("digits")
    if block is not None:
        spec = validate_document(_doc(block))
    projects = ProjectRegistry(store.db)
    projects.create(spec)
    runner = KubernetesRunner.from_settings(store, settings, ENV)
    return JobService(
        store, {"kubernetes": runner}, "kubernetes", lambda sid: f"file:///data/lake/snapshots/{sid}", projects
    )


# No API server listens here: a refusal must come before any call to it.
UNREACHABLE = TrainerSettings(k8s_api_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("settings", "project", "request_block", "gpus", "message"),
    [
        (
            UNREACHABLE,
            None,
            {"image": "docker.io/evil/miner:1"},
            0,
            "kubernetes.image: 'docker.io/evil/miner:1' is not allowed here; allowed: ghcr.io/flywheel/trainer:latest",
        ),
        (
            UNREACHABLE,
            {"image": "ghcr.io/flywheel/trainer:latest-evil"},  # the default allows the trainer's image, exactly
            None,
            0,
            "kubernetes.image: 'ghcr.io/flywheel/trainer:latest-evil' is not allowed here",
        ),
        (
            UNREACHABLE.model_copy(update={"k8s_allowed_images": "ghcr.io/acme/,registry.local/"}),
            None,
            {"image": "ghcr.io/other/x:1"},
            0,
            "kubernetes.image: 'ghcr.io/other/x:1' is not allowed here; allowed: ghcr.io/acme/,registry.local/",
        ),
        (UNREACHABLE, None, {"gpus": 9}, 0, "kubernetes.gpus: 9 is above this trainer's limit of 8"),
        (UNREACHABLE, None, None, 9, "kubernetes.gpus: 9 is above this trainer's limit of 8"),
        (
            UNREACHABLE.model_copy(update={"k8s_max_gpus": 0}),
            {"gpus": 1},
            None,
            0,
            "kubernetes.gpus: 1 is above this trainer's limit of 0",
        ),
        (
            UNREACHABLE,
            None,
            {"resources": {"requests": {"cpu": "3"}}},
            0,
            "kubernetes.resources.requests.cpu: 3 is above the trainer's limit (FLYWHEEL_TRAINER_K8S_CPU) 2; "
            "give resources.limits.cpu",
        ),
        (
            UNREACHABLE,
            {"resources": {"limits": {"memory": "1Gi"}}},
            {"resources": {"requests": {"memory": "8Gi"}}},  # replaces the project's resources: limit from settings
            0,
            "kubernetes.resources.requests.memory: 8Gi is above the trainer's limit (FLYWHEEL_TRAINER_K8S_MEMORY) 4Gi",
        ),
    ],
)
def test_what_the_trainer_will_not_run_is_refused_before_a_job_exists(
    store, settings, project, request_block, gpus, message
) -> None:
    jobs = _service(store, settings, project)
    override = KubernetesSpec.model_validate(request_block) if request_block is not None else None
    with pytest.raises(JobSpecInvalid) as caught:
        jobs.submit(model="digits", snapshot_id="snap", kubernetes=override, gpus=gpus, job_id="refused")
    assert str(caught.value).startswith(message), str(caught.value)
    assert store.list() == []
    assert ERRORS.status(caught.value).http == 422


def test_a_request_block_needs_the_kubernetes_runner(store) -> None:
    projects = ProjectRegistry(store.db)
    projects.create(example_spec("digits"))
    runner = KubernetesRunner.from_settings(store, UNREACHABLE, ENV)
    jobs = JobService(store, {"kubernetes": runner, "local": runner}, "local", lambda sid: sid, projects)
    with pytest.raises(JobSpecInvalid, match="kubernetes: applies to the kubernetes runner, not 'local'"):
        jobs.submit(model="digits", snapshot_id="snap", kubernetes=KubernetesSpec(gpus=1))
    assert store.list() == []


def test_the_rest_route_answers_422_naming_the_field(store) -> None:
    jobs = _service(store, UNREACHABLE)
    app = build_app(jobs, None, Readiness(), threading.Event())  # type: ignore[arg-type]  # no /v1/models here
    with TestClient(app) as http:
        shape = http.post("/v1/jobs", json={"model": "digits", "kubernetes": {"env": {"FLYWHEEL_HOME": "/x"}}})
        policy = http.post("/v1/jobs", json={"model": "digits", "kubernetes": {"image": "evil/x"}})
    assert shape.status_code == 422
    (err,) = shape.json()["detail"]
    assert err["loc"] == ["body", "kubernetes", "env"] and "FLYWHEEL_* variables are set by the platform" in err["msg"]
    assert policy.status_code == 422
    assert policy.json()["error"] == "JobSpecInvalid"
    assert policy.json()["detail"].startswith("kubernetes.image: 'evil/x' is not allowed here")
    assert store.list() == []


# -- the Job it renders ---------------------------------------------------------------------------------
def _job(store: JobStore, block: dict, gpus: int = 0, budget_s: float = 0.0):  # type: ignore[no-untyped-def]
    spec = example_spec("digits")
    return store.create(
        JobSpec(
            job_id="j1",
            model="digits",
            model_family="mlp",
            snapshot_id="snap",
            snapshot_uri="file:///data/lake/snapshots/snap",
            runner="kubernetes",
            gpus=gpus,
            budget_s=budget_s,
            project="digits",
            project_version=1,
            project_spec=spec_json(spec),
            kubernetes=KubernetesSpec.model_validate(block).model_dump(mode="json", exclude_none=True),
        )
    )


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_the_user_image_command_resources_env_and_ttl_are_rendered(store) -> None:
    settings = TrainerSettings(k8s_allowed_images="ghcr.io/acme/")
    block = {
        "image": "ghcr.io/acme/train:1.2",
        "command": ["python", "/app/train.py"],
        "args": ["--epochs", "3"],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
        "env": {"EPOCHS": "3", "FLYWHEEL_DATABASE": "x"},
        "ttlSecondsAfterFinished": 120,
        "activeDeadlineSeconds": 900,
    }
    with pytest.raises(ValueError, match="FLYWHEEL_DATABASE: FLYWHEEL_\\* variables are set by the platform"):
        _job(store, block)
    block["env"] = {"EPOCHS": "3", "HOME": "/tmp"}
    job = _job(store, block, budget_s=60)
    manifest = job_manifest(job, settings, {**ENV, "HOME": "/data"})
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    c = _container(manifest)
    assert c["image"] == "ghcr.io/acme/train:1.2"
    assert c["command"] == ["python", "/app/train.py"] and c["args"] == ["--epochs", "3"]
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    env = {e["name"]: e["value"] for e in c["env"]}
    # The user's variables win but for FLYWHEEL_* (which only the platform sets); FLYWHEEL_JOB_ID tells a
    # user command its job.
    assert env == {**ENV, "EPOCHS": "3", "HOME": "/tmp", "FLYWHEEL_JOB_ID": "j1"}
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 120
    assert manifest["spec"]["activeDeadlineSeconds"] == 900  # the block's, not the budget's 3×60+1800
    assert "tolerations" not in manifest["spec"]["template"]["spec"]
    assert "nodeSelector" not in manifest["spec"]["template"]["spec"]


def test_without_a_block_the_job_is_todays(store) -> None:
    settings = TrainerSettings()
    manifest = job_manifest(_job(store, {}, budget_s=60), settings, ENV)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    c = _container(manifest)
    assert c["image"] == settings.k8s_image
    assert c["command"] == ["python", "-m", "services.trainer.worker", "--job-id", "j1"] and "args" not in c
    limits = {"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
    assert c["resources"] == {"requests": limits, "limits": limits}
    assert manifest["spec"]["ttlSecondsAfterFinished"] == settings.k8s_ttl_s
    assert manifest["spec"]["activeDeadlineSeconds"] == 60 * 3 + 1800


@pytest.mark.parametrize("gpus", [1, 4])
def test_a_gpu_job_requests_nvidia_gpus_with_the_configured_placement(store, gpus: int) -> None:
    settings = TrainerSettings(
        k8s_gpu_node_selector="nvidia.com/gpu.present=true,pool=a100",
        k8s_gpu_tolerations="nvidia.com/gpu:NoSchedule,dedicated=training:NoExecute",
    )
    job = _job(store, {"gpus": gpus, "resources": {"limits": {"cpu": "8", "memory": "32Gi"}}}, gpus=gpus)
    manifest = job_manifest(job, settings, ENV)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    c = _container(manifest)
    assert c["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": str(gpus)}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert c["command"][0] == ("torchrun" if gpus > 1 else "python")
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "a100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"},
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("k8s_gpu_tolerations", "nvidia.com/gpu:Sometimes", "is not key\\[=value\\]:NoSchedule"),
        ("k8s_gpu_node_selector", "pool", "'pool' is not key=value"),
    ],
)
def test_a_malformed_gpu_placement_setting_stops_the_runner_at_start(store, field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        KubernetesRunner.from_settings(store, UNREACHABLE.model_copy(update={field: value}), ENV)


def test_a_submitted_request_block_reaches_the_api_server(store, httpserver: HTTPServer) -> None:
    settings = TrainerSettings(k8s_api_url=httpserver.url_for("").rstrip("/"), k8s_allowed_images="ghcr.io/acme/")
    created = record_job_creations(httpserver, settings.k8s_namespace)
    jobs = _service(store, settings, {"image": "ghcr.io/acme/train:1", "command": ["python", "train.py"], "gpus": 1})
    jobs.submit(
        model="digits",
        snapshot_id="snap",
        job_id="k1",
        kubernetes=KubernetesSpec.model_validate({"env": {"EPOCHS": "5"}, "ttlSecondsAfterFinished": 30}),
    )
    (body,) = created
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    c = _container(body)
    assert body["metadata"]["name"] == job_name("k1")
    assert c["image"] == "ghcr.io/acme/train:1" and c["command"] == ["python", "train.py"]  # the project's
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "EPOCHS", "value": "5"} in c["env"]  # the request's
    assert body["spec"]["ttlSecondsAfterFinished"] == 30

"""Training jobs' logs (`GET /v1/jobs/{id}/logs`, `flywheel train logs`) and the Kubernetes runner's reasons.

The Kubernetes API server is a FAKE (pytest-httpserver): the test suite has no cluster, so it plays
the API server's part for the calls the runner makes: pods listed by label selector, a pod's log
(tailLines and limitBytes applied the way the kubelet applies them), Job status, Job deletion, with
pod and Job objects shaped like the real core/v1 and batch/v1 ones (what kubectl get -o json shows
for a pending, unschedulable, image-pull-failing, OOMKilled pod). The coordinator runs the same
routes against a real cluster (tests/k8s). Everything else is real: the trainer's REST app served
by uvicorn on 127.0.0.1, its auth, the job store in SQLite, the CLI as a child process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from services.storage import Database, migrate
from services.telemetry import Readiness, serve_http_in_thread
from services.trainer.jobs import FAILED, RUNNING, SUCCEEDED, JobService, JobStore
from services.trainer.logs import MAX_LOG_BYTES, MAX_TAIL
from services.trainer.projects import ProjectRegistry
from services.trainer.registry import Registry
from services.trainer.runners.kubernetes import KubernetesRunner, job_name
from services.trainer.runners.local import LocalRunner
from services.trainer.settings import TrainerSettings
from services.trainer.tables import MIGRATIONS
from services.trainer.transport.rest import build_asgi
from services.transportkit.auth import TrustedCallers
from tests.support.credentials import operator, operator_token
from tests.support.projects import example_spec
from tests.trainer.conftest import record_job_creations

NS = "flywheel"
ENV = {"FLYWHEEL_HOME": "/data"}
LOG = b"".join(f"epoch {i:05d} loss {1 / (i + 1):.6f}\n".encode() for i in range(5000))


def _ts(ago_s: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=ago_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(job_id: str, name: str, status: dict, created_ago_s: float = 60.0, image: str = "") -> dict:
    """A pod as the API server returns it (metadata, spec.containers, status), for the Job of `job_id`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": _ts(created_ago_s),
            "labels": {
                "app.kubernetes.io/component": "training-job",
                "flywheel.dev/job-id": job_id,
                "batch.kubernetes.io/job-name": job_name(job_id),
            },
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": image or "trainer:dev"}]},
        "status": {"qosClass": "Guaranteed", **status},
    }


def _container(state: dict, image: str = "trainer:dev", ready: bool = False, last: dict | None = None) -> dict:
    return {
        "name": "trainer",
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": ready,
        "state": state,
        "lastState": last or {},
    }


def running(job_id: str, name: str, created_ago_s: float = 60.0) -> dict:
    return _pod(
        job_id,
        name,
        {
            "phase": "Running",
            "startTime": _ts(created_ago_s),
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(created_ago_s)}],
            "containerStatuses": [_container({"running": {"startedAt": _ts(created_ago_s)}}, ready=True)],
        },
        created_ago_s,
    )


def waiting(job_id: str, reason: str, message: str = "", image: str = "trainer:dev", ago_s: float = 5.0) -> dict:
    state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return _pod(
        job_id,
        f"{job_name(job_id)}-w4it",
        {
            "phase": "Pending",
            "startTime": _ts(ago_s),
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(ago_s)}],
            "containerStatuses": [_container(state, image=image)],
        },
        ago_s,
        image=image,
    )


UNSCHEDULABLE = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
    "scheduling, 2 No preemption victims found for incoming pod."
)


def unschedulable(job_id: str, ago_s: float = 5.0) -> dict:
    return _pod(
        job_id,
        f"{job_name(job_id)}-p3nd",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": UNSCHEDULABLE,
                    "lastProbeTime": None,
                    "lastTransitionTime": _ts(ago_s),
                }
            ],
        },
        ago_s,
    )


def terminated(job_id: str, name: str, exit_code: int, reason: str) -> dict:
    ended = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": _ts(90), "finishedAt": _ts(30)}}
    return _pod(job_id, name, {"phase": "Failed", "startTime": _ts(90), "containerStatuses": [_container(ended)]})


def failed_job(job_id: str, reason: str, message: str, failed: int = 0, deadline: int | None = None) -> dict:
    """A batch/v1 Job whose Failed condition is set (what `kubectl get job -o json` shows)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job_id), "namespace": NS},
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": deadline,
            "template": {"spec": {"containers": [{"name": "trainer", "image": "trainer:dev"}]}},
        },
        "status": {
            "failed": failed,
            "startTime": _ts(120),
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": _ts(10),
                    "lastTransitionTime": _ts(10),
                },
            ],
        },
    }


def active_job(job_id: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job_id), "namespace": NS},
        "status": {"active": 1, "startTime": _ts(60)},
    }


def _status_404(kind: str, name: str) -> Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'{kind} "{name}" not found',
        "reason": "NotFound",
        "code": 404,
    }
    return Response(json.dumps(body), status=404, content_type="application/json")


@dataclass
class FakeCluster:
    """The API server's state for these tests: pods (by job id), logs (by pod), Jobs (by name)."""

    pods: dict[str, list[dict]] = field(default_factory=dict)
    logs: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    log_requests: list[dict[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # follow: the chunks a followed log sends, and the seconds it then stays silent
    follow_chunks: list[bytes] = field(default_factory=list)
    follow_silence_s: float = 0.0

    def install(self, server: HTTPServer) -> list[dict]:
        created = record_job_creations(server, NS)
        server.expect_request(f"/api/v1/namespaces/{NS}/pods", method="GET").respond_with_handler(self._list)
        server.expect_request(
            re.compile(rf"/api/v1/namespaces/{NS}/pods/[^/]+/log"), method="GET"
        ).respond_with_handler(self._log)
        jobs = re.compile(rf"/apis/batch/v1/namespaces/{NS}/jobs/([^/]+)/status")
        server.expect_request(jobs, method="GET").respond_with_handler(self._job)
        server.expect_request(
            re.compile(rf"/apis/batch/v1/namespaces/{NS}/jobs/[^/]+"), method="DELETE"
        ).respond_with_handler(self._delete)
        return created

    def _list(self, request: Request) -> Response:
        key, _, value = request.args.get("labelSelector", "").partition("=")
        assert key == "flywheel.dev/job-id", request.args
        items = self.pods.get(value, [])
        body = {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}
        return Response(json.dumps(body), content_type="application/json")

    def _log(self, request: Request) -> Response:
        pod = request.path.split("/")[-2]
        self.log_requests.append({"pod": pod, **request.args})
        if pod not in self.logs:
            return _status_404("pods", pod)
        text = self.logs[pod]
        # The kubelet: the last tailLines lines, then at most limitBytes of them.
        if "tailLines" in request.args:
            lines = text.splitlines(keepends=True)
            text = b"".join(lines[-int(request.args["tailLines"]) :])
        if "limitBytes" in request.args:
            text = text[: int(request.args["limitBytes"])]
        if request.args.get("follow") != "true":
            return Response(text, content_type="text/plain")

        def stream() -> Iterator[bytes]:
            yield text
            for chunk in self.follow_chunks:
                time.sleep(0.2)
                yield chunk
            time.sleep(self.follow_silence_s)

        return Response(stream(), content_type="text/plain")

    def _job(self, request: Request) -> Response:
        name = request.path.split("/")[-2]
        if name not in self.jobs:
            return _status_404("jobs.batch", name)
        return Response(json.dumps(self.jobs[name]), content_type="application/json")

    def _delete(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        self.deleted.append(name)
        self.jobs.pop(name, None)
        return Response(json.dumps({"kind": "Status", "status": "Success"}), content_type="application/json")


@pytest.fixture
def api() -> Iterator[HTTPServer]:
    """Threaded: a followed log holds one request open while others come."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@dataclass
class Trainer:
    jobs: JobService
    store: JobStore
    cluster: FakeCluster
    url: str
    runner: KubernetesRunner
    log_dir: object

    def submit(self, job_id: str, gpus: int = 0) -> None:
        self.jobs.submit(model="digits", snapshot_id="snap", model_family="mlp", gpus=gpus, job_id=job_id)

    def get_logs(self, job_id: str, headers: dict | None = None, **params: object) -> httpx.Response:
        return httpx.get(
            f"{self.url}/v1/jobs/{job_id}/logs",
            params=params,
            headers=operator() if headers is None else headers,
            timeout=30,
        )


@pytest.fixture
def trainer(tmp_path, api: HTTPServer) -> Iterator[Trainer]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url, [MIGRATIONS])
    db = Database(url)
    store = JobStore(db)
    settings = TrainerSettings(
        k8s_api_url=api.url_for("").rstrip("/"),
        k8s_namespace=NS,
        k8s_image="trainer:dev",
        log_read_timeout_s=1.0,
        k8s_stuck_after_s=60.0,
        k8s_reconcile_interval_s=0,
    )
    cluster = FakeCluster()
    cluster.install(api)
    k8s = KubernetesRunner.from_settings(store, settings, ENV)
    local = LocalRunner(store, {}, log_dir=tmp_path / "logs", log_read_timeout_s=1.0)  # not begun: jobs stay queued
    projects = ProjectRegistry(db)
    projects.create(example_spec("digits"))
    jobs = JobService(store, {"kubernetes": k8s, "local": local}, "kubernetes", lambda s: f"file:///lake/{s}", projects)
    stop = threading.Event()
    registry = Registry(db, repository_uri=(tmp_path / "models").as_uri())
    callers = TrustedCallers.parse(TrustedCallers.entry("operator", operator_token()))
    http = serve_http_in_thread(build_asgi(jobs, registry, Readiness(), stop, callers), "127.0.0.1", 0)
    yield Trainer(jobs, store, cluster, f"http://127.0.0.1:{http.port}", k8s, tmp_path / "logs")
    stop.set()
    http.stop()
    db.close()


def _with_log(t: Trainer, job_id: str, log: bytes = LOG) -> str:
    """A submitted job whose pod runs and has written `log`; an older pod of the same Job failed (a retry)."""
    t.submit(job_id)
    old, new = f"{job_name(job_id)}-0ld01", f"{job_name(job_id)}-n3w02"
    t.cluster.pods[job_id] = [running(job_id, new, created_ago_s=10), terminated(job_id, old, 1, "Error")]
    t.cluster.logs[old] = b"the first attempt\n"
    t.cluster.logs[new] = log
    return new


def test_logs_of_a_running_pod(trainer: Trainer) -> None:
    pod = _with_log(trainer, "lg1")
    resp = trainer.get_logs("lg1")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"".join(LOG.splitlines(keepends=True)[-1000:])  # the default tail
    assert resp.headers["X-Flywheel-Log-Source"] == f"pod {NS}/{pod}"  # the newest pod, not the retried one
    assert resp.headers["X-Flywheel-Log-Truncated"] == "false"
    sent = trainer.cluster.log_requests[-1]
    assert sent["container"] == "trainer" and sent["tailLines"] == "1000"
    assert sent["limitBytes"] == str((1 << 20) + 1)


def test_tail_bounds_the_lines(trainer: Trainer) -> None:
    _with_log(trainer, "lg2")
    resp = trainer.get_logs("lg2", tail=3)
    assert resp.status_code == 200 and resp.content == b"".join(LOG.splitlines(keepends=True)[-3:])
    assert trainer.get_logs("lg2", tail=MAX_TAIL).content == b"".join(LOG.splitlines(keepends=True)[-MAX_TAIL:])


def test_max_bytes_cuts_the_log_and_says_so(trainer: Trainer) -> None:
    _with_log(trainer, "lg3")
    resp = trainer.get_logs("lg3", tail=100, max_bytes=100)
    assert resp.status_code == 200
    tail = b"".join(LOG.splitlines(keepends=True)[-100:])
    assert resp.content.startswith(tail[:100]) and resp.headers["X-Flywheel-Log-Truncated"] == "true"
    marker = resp.content[100:].decode()
    assert "log truncated at 100 bytes" in marker and "fewer lines (tail)" in marker
    assert len(resp.content) < 100 + 200
    exact = trainer.get_logs("lg3", tail=2, max_bytes=len(b"".join(LOG.splitlines(keepends=True)[-2:])))
    assert exact.headers["X-Flywheel-Log-Truncated"] == "false"  # exactly the bound: nothing was cut


def test_follow_streams_until_quiet_for_the_read_timeout(trainer: Trainer) -> None:
    _with_log(trainer, "lg4", b"start\n")
    trainer.cluster.follow_chunks = [b"epoch 1\n", b"epoch 2\n"]
    trainer.cluster.follow_silence_s = 5.0  # the job goes quiet for longer than log_read_timeout_s (1 s)
    got: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    with httpx.stream(
        "GET", f"{trainer.url}/v1/jobs/lg4/logs", params={"follow": "true"}, headers=operator(), timeout=30
    ) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_bytes():
            got.append((time.monotonic() - t0, chunk))
    body = b"".join(c for _, c in got)
    assert body.startswith(b"start\nepoch 1\nepoch 2\n"), body
    assert "no output for 1 s; stream closed" in body.decode()
    assert got[0][0] < 1.0  # the first bytes come at once, not when the stream ends
    assert 1.0 <= got[-1][0] < 4.0  # ended by the read timeout, not by the fake's 5 s of silence
    assert trainer.cluster.log_requests[-1]["follow"] == "true"

    trainer.cluster.follow_silence_s = 0.0  # the container exits: the stream ends with it, no marker
    resp = trainer.get_logs("lg4", follow="true")
    assert resp.content == b"start\nepoch 1\nepoch 2\n"


def test_a_pod_that_has_not_started_is_409_with_its_reason(trainer: Trainer) -> None:
    trainer.submit("pend1")
    trainer.cluster.pods["pend1"] = [waiting("pend1", "ContainerCreating")]
    resp = trainer.get_logs("pend1")
    assert resp.status_code == 409
    assert resp.json()["error"] == "JobLogUnavailable" and "has not started" in resp.json()["detail"]
    assert "ContainerCreating" in resp.json()["detail"]

    trainer.submit("pend2", gpus=2)
    trainer.cluster.pods["pend2"] = [unschedulable("pend2")]
    detail = trainer.get_logs("pend2").json()["detail"]
    assert "unschedulable: no node has a free nvidia.com/gpu" in detail

    trainer.submit("pend3")
    trainer.cluster.jobs[job_name("pend3")] = active_job("pend3")  # the Job exists; no pod yet
    resp = trainer.get_logs("pend3")
    assert resp.status_code == 409 and "has created no pod yet" in resp.json()["detail"]


def test_a_job_removed_after_its_ttl_is_404_saying_so(trainer: Trainer) -> None:
    trainer.submit("ttl1")
    trainer.store.update("ttl1", state=SUCCEEDED, phase="done")
    trainer.store.update("ttl1", only_if_not_terminal=False, finished_at=datetime.now(UTC) - timedelta(seconds=3700))
    resp = trainer.get_logs("ttl1")  # no pods, and the Job is gone: its TTL removed both
    assert resp.status_code == 404
    detail = resp.json()["detail"]
    assert "removed 3600 s after it finished (ttlSecondsAfterFinished)" in detail and job_name("ttl1") in detail

    trainer.submit("ttl2")  # finished a minute ago: its TTL (3600 s) has not passed, so not the TTL's doing
    trainer.store.update("ttl2", state=FAILED, phase="failed", finished_at=datetime.now(UTC) - timedelta(seconds=60))
    resp = trainer.get_logs("ttl2")
    assert resp.status_code == 404 and "is not there (deleted by hand?)" in resp.json()["detail"]

    trainer.submit("ttl3")
    trainer.cluster.jobs[job_name("ttl3")] = active_job("ttl3")
    trainer.store.update("ttl3", state="cancelled", phase="cancelled", reason="cancelled; Kubernetes Job deleted")
    trainer.cluster.jobs.clear()
    resp = trainer.get_logs("ttl3")
    assert resp.status_code == 404 and "was deleted then (cancelled; Kubernetes Job deleted)" in resp.json()["detail"]


def test_unknown_job_is_404(trainer: Trainer) -> None:
    resp = trainer.get_logs("no-such-job")
    assert resp.status_code == 404 and resp.json() == {"error": "JobNotFound", "detail": "no job 'no-such-job'"}


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"tail": 0}, 422, "tail"),
        ({"tail": MAX_TAIL + 1}, 422, "tail"),
        ({"tail": "ten"}, 422, "tail"),
        ({"max_bytes": 0}, 422, "max_bytes"),
        ({"max_bytes": MAX_LOG_BYTES + 1}, 422, "max_bytes"),
        ({"follow": "maybe"}, 422, "follow"),
        ({"lines": 5}, 400, "unknown parameter(s) ['lines']"),
    ],
)
def test_bad_parameters_are_refused(trainer: Trainer, params: dict, status: int, words: str) -> None:
    _with_log(trainer, "bad1")
    resp = trainer.get_logs("bad1", **params)
    assert resp.status_code == status and words in resp.text, resp.text
    assert not trainer.cluster.log_requests  # refused before the API server is asked


def test_logs_need_a_service_credential(trainer: Trainer) -> None:
    _with_log(trainer, "auth1")
    assert trainer.get_logs("auth1", headers={}).status_code == 401
    assert trainer.get_logs("auth1", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_local_job_has_its_worker_log_or_a_409(trainer: Trainer) -> None:
    trainer.jobs.submit(model="digits", snapshot_id="snap", model_family="mlp", runner="local", job_id="loc1")
    resp = trainer.get_logs("loc1")
    assert resp.status_code == 409 and "queued and has not started" in resp.json()["detail"]
    trainer.log_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    (trainer.log_dir / "loc1.log").write_bytes(LOG)  # type: ignore[operator]
    resp = trainer.get_logs("loc1", tail=4)
    assert resp.status_code == 200 and resp.content == b"".join(LOG.splitlines(keepends=True)[-4:])
    assert resp.headers["X-Flywheel-Log-Source"].endswith("loc1.log")
    cut = trainer.get_logs("loc1", max_bytes=10)
    assert cut.content.startswith(b"".join(LOG.splitlines(keepends=True)[-1000:])[:10])
    assert cut.headers["X-Flywheel-Log-Truncated"] == "true"


def test_a_local_log_is_followed_until_the_job_ends(trainer: Trainer) -> None:
    trainer.log_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    for job_id in ("loc2", "loc3"):
        trainer.jobs.submit(model="digits", snapshot_id="snap", model_family="mlp", runner="local", job_id=job_id)
        (trainer.log_dir / f"{job_id}.log").write_bytes(b"a\n")  # type: ignore[operator]

    def worker() -> None:  # writes two lines, then records its outcome
        path = trainer.log_dir / "loc2.log"  # type: ignore[operator]
        for line in (b"b\n", b"c\n"):
            time.sleep(0.3)
            with path.open("ab") as fh:
                fh.write(line)
        trainer.store.update("loc2", state=SUCCEEDED, phase="done")

    threading.Thread(target=worker, daemon=True).start()
    assert trainer.get_logs("loc2", follow="true").content == b"a\nb\nc\n"
    quiet = trainer.get_logs("loc3", follow="true")  # never ends: closed after log_read_timeout_s (1 s)
    assert quiet.content.startswith(b"a\n") and "no output for 1 s" in quiet.text


def _cli(trainer: Trainer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_SERVICE_TOKEN": operator_token()}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "logs", *args, "--trainer-url", trainer.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_entry_point_prints_the_log_and_refuses_clearly(trainer: Trainer) -> None:
    _with_log(trainer, "cli1")
    out = _cli(trainer, "cli1", "--tail", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode() == b"".join(LOG.splitlines(keepends=True)[-2:])
    unknown = _cli(trainer, "nope")
    assert unknown.returncode == 1 and "no job 'nope'" in unknown.stderr and "HTTP 404" in unknown.stderr


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(trainer: Trainer, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`flywheel` in this process (services.cli.main.main, what the entry point calls): its start-up
    (seconds on a loaded machine) is paid once, not per call."""
    from services.cli.main import main

    def run(*args: str, token: str | None = None) -> Ran:
        monkeypatch.setenv("FLYWHEEL_SERVICE_TOKEN", operator_token() if token is None else token)
        capfd.readouterr()
        try:
            code = main(["train", "logs", *args, "--trainer-url", trainer.url])
        except SystemExit as exc:  # argparse refusing an argument
            code = int(exc.code or 0)
        captured = capfd.readouterr()
        return Ran(code, captured.out, " ".join(captured.err.split()))

    return run


def test_cli_cuts_explains_and_follows(trainer: Trainer, cli) -> None:  # type: ignore[no-untyped-def]
    _with_log(trainer, "cli2")
    cut = cli("cli2", "--tail", "5", "--max-bytes", "20")
    assert cut.code == 0 and "log truncated at 20 bytes" in cut.out and "cut at 20 bytes" in cut.err

    trainer.submit("cli3", gpus=1)
    trainer.cluster.pods["cli3"] = [unschedulable("cli3")]
    pending = cli("cli3")
    assert pending.code == 1 and "HTTP 409" in pending.err and "no node has a free nvidia.com/gpu" in pending.err

    trainer.submit("cli4")
    trainer.store.update("cli4", state=SUCCEEDED, phase="done", finished_at=datetime.now(UTC) - timedelta(hours=2))
    gone = cli("cli4")
    assert gone.code == 1 and "HTTP 404" in gone.err and "ttlSecondsAfterFinished" in gone.err

    denied = cli("cli2", token="not-a-token")
    assert denied.code == 1 and "HTTP 401" in denied.err and "FLYWHEEL_SERVICE_TOKEN" in denied.err

    for bad, words in ((["--tail", "0"], "between 1 and 10000"), (["--max-bytes", "9999999999"], "8 MiB")):
        refused = cli("cli2", *bad)
        assert refused.code == 2 and words in refused.err

    _with_log(trainer, "cli5", b"start\n")
    trainer.cluster.follow_chunks = [b"epoch 1\n"]
    followed = cli("cli5", "--follow")
    assert followed.code == 0 and followed.out == "start\nepoch 1\n"


# --- the reconciler: the cluster's reasons in the job's row -------------------------------------------------


def test_oomkilled_is_the_reason_of_a_failed_job(trainer: Trainer) -> None:
    trainer.submit("oom1")
    trainer.cluster.pods["oom1"] = [
        terminated("oom1", f"{job_name('oom1')}-a", 137, "OOMKilled"),
        terminated("oom1", f"{job_name('oom1')}-b", 137, "OOMKilled"),
    ]
    trainer.cluster.jobs[job_name("oom1")] = failed_job(
        "oom1", "BackoffLimitExceeded", "Job has reached the specified backoff limit", failed=2
    )
    job = trainer.jobs.get("oom1")
    assert job.state == FAILED
    assert job.reason.startswith("Kubernetes Job failed: OOMKilled: the training container used more than its")
    assert "memory limit 4Gi (exit code 137)" in job.reason and job.reason.count("OOMKilled") == 1
    assert job.reason.endswith("BackoffLimitExceeded: its pod failed 2 time(s) (backoffLimit 1)")


def test_backoff_limit_with_the_exit_code(trainer: Trainer) -> None:
    trainer.submit("bo1")
    trainer.cluster.pods["bo1"] = [terminated("bo1", f"{job_name('bo1')}-a", 1, "Error")]
    trainer.cluster.jobs[job_name("bo1")] = failed_job(
        "bo1", "BackoffLimitExceeded", "Job has reached the specified backoff limit", failed=2
    )
    job = trainer.jobs.get("bo1")
    assert job.state == FAILED
    assert job.reason == (
        "Kubernetes Job failed: Error: the training container exited with code 1; "
        "BackoffLimitExceeded: its pod failed 2 time(s) (backoffLimit 1)"
    )


def test_deadline_exceeded(trainer: Trainer) -> None:
    trainer.submit("dl1")
    trainer.cluster.jobs[job_name("dl1")] = failed_job(
        "dl1", "DeadlineExceeded", "Job was active longer than specified deadline", deadline=1800
    )
    job = trainer.jobs.get("dl1")
    assert job.state == FAILED
    assert job.reason == (
        "Kubernetes Job failed: DeadlineExceeded: the Job ran longer than its activeDeadlineSeconds "
        "(1800 s; kubernetes.activeDeadlineSeconds)"
    )


IMAGE = "ghcr.io/acme/trainer:missing"


@pytest.mark.parametrize(
    ("make_pod", "words"),
    [
        (
            lambda jid, ago: waiting(jid, "ImagePullBackOff", f'Back-off pulling image "{IMAGE}"', IMAGE, ago),
            f'image {IMAGE} cannot be pulled: ImagePullBackOff: Back-off pulling image "{IMAGE}"',
        ),
        (
            lambda jid, ago: waiting(jid, "ErrImagePull", "rpc error: code = NotFound desc = not found", IMAGE, ago),
            f"image {IMAGE} cannot be pulled: ErrImagePull: rpc error: code = NotFound",
        ),
        (
            lambda jid, ago: unschedulable(jid, ago),
            f"unschedulable: no node has a free nvidia.com/gpu ({UNSCHEDULABLE})",
        ),
    ],
    ids=["ImagePullBackOff", "ErrImagePull", "Unschedulable"],
)
def test_a_pod_that_cannot_start_is_said_then_failed_once_stuck(trainer: Trainer, make_pod, words: str) -> None:
    trainer.submit("st1", gpus=1)
    trainer.cluster.jobs[job_name("st1")] = active_job("st1")
    trainer.cluster.pods["st1"] = [make_pod("st1", 5.0)]  # for 5 s: said, not failed
    job = trainer.jobs.get("st1")
    assert job.state == RUNNING and job.phase == "pending" and words in job.message
    assert not trainer.cluster.deleted

    trainer.cluster.pods["st1"] = [make_pod("st1", 120.0)]  # for 120 s, over k8s_stuck_after_s (60 s)
    job = trainer.jobs.get("st1")
    assert job.state == FAILED and words in job.reason
    assert re.search(r"for 1[12]\d s \(FLYWHEEL_TRAINER_K8S_STUCK_AFTER_S\), so its Job was deleted", job.reason)
    assert trainer.cluster.deleted == [job_name("st1")]


def test_a_pod_still_creating_is_not_stuck(trainer: Trainer) -> None:
    trainer.submit("cc1")
    trainer.cluster.jobs[job_name("cc1")] = active_job("cc1")
    trainer.cluster.pods["cc1"] = [waiting("cc1", "ContainerCreating", ago_s=3600)]
    job = trainer.jobs.get("cc1")
    assert job.state == RUNNING and job.message == "the pod is starting: ContainerCreating"


def test_the_reconcile_loop_fails_a_stuck_job_without_a_read(trainer: Trainer) -> None:
    trainer.submit("loop1", gpus=1)
    trainer.cluster.jobs[job_name("loop1")] = active_job("loop1")
    trainer.cluster.pods["loop1"] = [unschedulable("loop1", 300.0)]
    trainer.runner._settings.k8s_reconcile_interval_s = 0.1
    stop = threading.Event()
    trainer.runner.begin(stop)
    try:
        deadline = time.monotonic() + 10
        while trainer.store.get("loop1").state != FAILED and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        trainer.runner.close()
    job = trainer.store.get("loop1")  # the store, not the service: no read reconciled it
    assert job.state == FAILED and "no node has a free nvidia.com/gpu" in job.reason

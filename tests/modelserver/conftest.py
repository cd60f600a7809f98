"""Model-server fixtures: a Triton-layout repository of small real models, and the server as a process.

The test process talks to the server with tritonclient only. tritonclient.grpc registers the
same protobuf names (`inference.*`) as services.genproto.inference, so these tests never
import the server's generated code: the server always runs as a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import tritonclient.http as thttp
from tritonclient._plugin import InferenceServerClientPlugin

from services.devstack.ports import free_port
from services.transportkit.auth import authenticated_channel
from tests.modelserver.artifacts import write_onnx_model, write_torchscript_model
from tests.support.credentials import operator, operator_token, service_env
from tests.support.required import unavailable
from tests.support.waiting import wait_until


class OperatorAuth(InferenceServerClientPlugin):
    """tritonclient's hook for headers: every call of a client carries the operator's service credential."""

    def __call__(self, request) -> None:  # type: ignore[no-untyped-def]
        request.headers.update(operator())


ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen
    http: str  # host:port
    grpc: str
    repo: Path
    log: Path

    headers = property(lambda self: operator())  # internal routes admit the operator

    def grpc_client(self):  # type: ignore[no-untyped-def] # tritonclient.grpc: see triton_grpc.py
        from tests.modelserver.triton_grpc import tgrpc

        client = tgrpc.InferenceServerClient(self.grpc)
        client.register_plugin(OperatorAuth())
        return client

    def http_client(self) -> thttp.InferenceServerClient:
        client = thttp.InferenceServerClient(self.http)
        client.register_plugin(OperatorAuth())
        return client

    def channel(self) -> grpc.Channel:
        """A raw gRPC channel with the operator's credential on every call."""
        return authenticated_channel(grpc.insecure_channel(self.grpc), operator_token())

    def metrics(self) -> str:
        return httpx.get(f"http://{self.http}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in self.metrics().splitlines():
            sample = line.startswith(f"{name}{{") or (not labels and line.startswith(f"{name} "))
            if sample and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {name}{{{want}}}")

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def _ready(http: str) -> bool:
    return httpx.get(f"http://{http}/readyz", timeout=2).status_code == 200


@contextmanager
def running_server(repo: Path, log_dir: Path, **settings: object) -> Iterator[Server]:
    """Start `python -m services.modelserver` on free ports; on exit SIGTERM it and expect exit 0."""
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLYWHEEL_MODELSERVER_MODEL_REPOSITORY": str(repo),
        "FLYWHEEL_MODELSERVER_HTTP_PORT": str(http_port),
        "FLYWHEEL_MODELSERVER_GRPC_PORT": str(grpc_port),
        "FLYWHEEL_MODELSERVER_HOST": "127.0.0.1",
        **service_env("modelserver"),
        **{f"FLYWHEEL_MODELSERVER_{k.upper()}": str(v) for k, v in settings.items() if k != "kafka_bootstrap"},
    }
    if "kafka_bootstrap" in settings:
        env["FLYWHEEL_KAFKA_BOOTSTRAP"] = str(settings["kafka_bootstrap"])
    log = log_dir / f"modelserver-{http_port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.modelserver"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    server = Server(proc, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", repo, log)
    try:
        wait_until(lambda: _ready(server.http), timeout_s=90, proc=proc, message="model server ready")
        yield server
    except BaseException:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        code = server.stop()
        if code != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
        assert code == 0, f"model server exited with {code} on SIGTERM"


FRONTS = ("compiled", "aio")


def compiled_front_built() -> bool:
    """Whether `make grpcfront` put the compiled gRPC front into the package (found, not imported)."""
    return importlib.util.find_spec("services.modelserver._grpcfront") is not None


def require_front(front: str) -> str:
    """`front`, when this checkout can run it: the compiled one needs `make grpcfront` (a failure in CI)."""
    if front == "compiled" and not compiled_front_built():
        unavailable("the compiled gRPC front is not built: run `make grpcfront` (needs cargo)")
    return front


@pytest.fixture(scope="module", params=FRONTS)
def grpc_front(request: pytest.FixtureRequest) -> str:
    """Each gRPC test runs against both fronts; FLYWHEEL_MODELSERVER_GRPC_FRONT is what the server gets."""
    return require_front(request.param)


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory, grpc_front: str) -> Path:
    """digits v1+v2 (latest 3), a TorchScript model, and two version policies over versions 1..3; one per
    front, since tests change what the repository holds (load/unload, a broken model)."""
    repo = tmp_path_factory.mktemp("models")
    write_onnx_model(repo, "digits", [1, 2], num_versions=3)
    write_torchscript_model(repo, "digits_ts")
    write_onnx_model(repo, "pinned", [1, 2, 3])
    config = repo / "pinned" / "config.pbtxt"
    config.write_text(config.read_text().replace("latest { num_versions: 3 }", "specific { versions: [1, 3] }"))
    write_onnx_model(repo, "newest", [1, 2, 3], num_versions=1)
    return repo


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory, grpc_front: str) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("logs")
    with running_server(model_repo, logs, max_request_bytes=65536, grpc_front=grpc_front) as s:
        yield s

"""Gateway fixtures: a real model server subprocess on a real repository, and gateways in front of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.devstack.ports import free_port
from services.gateway.keys import KeyStore
from services.gateway.tables import MIGRATIONS
from services.storage import Database, migrate
from tests.gateway.models import write_repository
from tests.support.credentials import operator, service_env
from tests.support.waiting import wait_until


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen, name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{name} did not stop on SIGTERM") from None
    assert code == 0, f"{name} exited {code} on SIGTERM"


@dataclass
class ModelServer:
    repo: Path
    grpc_addr: str
    http_url: str
    headers = property(lambda self: operator())  # the model server admits the gateway and the operator


def spawn_modelserver(
    work: Path, http_port: int = 0, settings: dict[str, str] | None = None
) -> tuple[subprocess.Popen, ModelServer]:
    """A model server on free ports (HTTP on `http_port` when given) serving a fresh repository under `work`,
    ready (its log: work/modelserver.log); `settings` as FLYWHEEL_MODELSERVER_<NAME>=value."""
    repo = write_repository(work / "models")
    http, grpc_port = http_port or free_port(), free_port()
    with open(work / "modelserver.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.modelserver",
                "--model-repository",
                str(repo),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc_port),
            ],
            env={
                **os.environ,
                "FLYWHEEL_HOME": str(work),
                "FLYWHEEL_LOG_LEVEL": "WARNING",
                **service_env("modelserver"),
                **{f"FLYWHEEL_MODELSERVER_{k.upper()}": v for k, v in (settings or {}).items()},
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{http}/readyz"), timeout_s=90, proc=proc, message="modelserver")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, ModelServer(repo, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http}")


@pytest.fixture(scope="session")
def modelserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    proc, server = spawn_modelserver(tmp_path_factory.mktemp("modelserver"))
    try:
        yield server
    finally:
        _stop(proc, "modelserver")


@dataclass
class Gateway:
    http_url: str
    grpc_addr: str
    database_url: str
    proc: subprocess.Popen
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        text = httpx.get(f"{self.http_url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def logs(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def keydb(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, KeyStore]:
    url = f"sqlite:///{tmp_path_factory.mktemp('gatewaydb') / 'flywheel.db'}"
    migrate(url, [MIGRATIONS])
    return url, KeyStore(Database(url))


@pytest.fixture(scope="module")
def keys(keydb: tuple[str, KeyStore]) -> dict[str, str]:
    store = keydb[1]
    return {
        "predict": store.create("tests-predict", ["predict"], rate_per_s=10000, burst=10000),
        "admin": store.create("tests-admin", ["admin", "predict"], rate_per_s=10000, burst=10000),
        "admin_only": store.create("tests-admin-only", ["admin"], rate_per_s=10000, burst=10000),
    }


GatewayFactory = Callable[..., Gateway]


def launch_gateway(
    work: Path,
    database_url: str,
    modelserver_addr: str,
    repo: Path,
    bootstrap: str | None = None,
    probe: str = "readyz",
    **overrides: object,
) -> Gateway:
    """A gateway process in front of `modelserver_addr`, ready on `probe` (env overrides as
    FLYWHEEL_GATEWAY_<NAME>=value keyword args); the caller stops it (`_stop`)."""
    http, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(work),
        "FLYWHEEL_DATABASE_URL": database_url,
        "FLYWHEEL_LOG_LEVEL": "INFO",
        "FLYWHEEL_GATEWAY_HTTP_PORT": str(http),
        "FLYWHEEL_GATEWAY_GRPC_PORT": str(grpc_port),
        "FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR": modelserver_addr,
        "FLYWHEEL_GATEWAY_MODEL_REPOSITORY": str(repo),
        "FLYWHEEL_GATEWAY_EVENTS": "true" if bootstrap else "false",
        **service_env("gateway"),
    }
    if bootstrap:
        env["FLYWHEEL_KAFKA_BOOTSTRAP"] = bootstrap
    env.update({f"FLYWHEEL_GATEWAY_{k.upper()}": str(v) for k, v in overrides.items()})
    log_path = work / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    gw = Gateway(f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}", database_url, proc, log_path)
    try:
        wait_until(lambda: _ready(f"{gw.http_url}/{probe}"), timeout_s=60, proc=proc, message=f"gateway {probe}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return gw


@pytest.fixture(scope="module")
def start_gateway(
    modelserver: ModelServer, keydb: tuple[str, KeyStore], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Start gateways (env overrides as FLYWHEEL_GATEWAY_<NAME>=value keyword args); all stopped at the end."""
    started: list[Gateway] = []

    def start(bootstrap: str | None = None, probe: str = "readyz", **overrides: object) -> Gateway:
        gw = launch_gateway(
            tmp_path_factory.mktemp("gateway"),
            keydb[0],
            modelserver.http_url.removeprefix("http://"),
            modelserver.repo,
            bootstrap,
            probe,
            **overrides,
        )
        started.append(gw)
        return gw

    yield start
    for gw in started:
        _stop(gw.proc, "gateway")


@pytest.fixture(scope="module")
def gateway(start_gateway: GatewayFactory) -> Gateway:
    """A gateway without Kafka, small rate limits left to the keys."""
    return start_gateway(max_request_bytes=65536, max_instances=64)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}

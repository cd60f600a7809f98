"""The real stack for the hostile-input suite: `flywheel up`'s runner on free ports, with its credentials.

One stack per session (broker, model server with the digits test models, ingest, lake, trainer,
gateway, monitor), started exactly as `flywheel up` starts it; the tests send what an attacker
would and then check that every service still answers, that memory stayed bounded and that
nothing was lost. Settings that make the bounds quick to reach (a 2 s silence for gRPC label
streams, 4 stream workers) are passed the way a deployment would pass them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from services.devstack import supervisor
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port
from services.devstack.stack import spec
from services.transportkit.auth import authenticated_channel
from tests.gateway.models import write_repository
from tests.support.waiting import wait_until

MODEL = "digits"
SERVICES = ("modelserver", "ingest", "lake", "trainer", "gateway", "monitor")
STACK_ENV = {
    "FLYWHEEL_INGEST_STREAM_IDLE_S": "8",  # long enough for the fifth stream to find four busy on a loaded machine
    "FLYWHEEL_INGEST_GRPC_WORKERS": "4",
    "FLYWHEEL_INGEST_STREAM_MAX_LABELS": "3000",
    "FLYWHEEL_LAKE_FLUSH_INTERVAL_S": "0.5",
    # The bootstrap key is the fuzzer's and the tests': its own bucket must not be what answers 429.
    "FLYWHEEL_GATEWAY_DEFAULT_RATE_PER_S": "100000",
    "FLYWHEEL_GATEWAY_DEFAULT_BURST": "100000",
    "FLYWHEEL_LOG_LEVEL": "WARNING",
}


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB (from /proc: what the kernel charges it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Stack:
    home: Path
    components: list[supervisor.Component]
    credentials: StackCredentials
    extra: list[subprocess.Popen] = field(default_factory=list)

    def _component(self, name: str) -> supervisor.Component:
        return next(c for c in self.components if c.name == name)

    def url(self, service: str) -> str:
        return f"http://{self._component(service).roles()['http']}"

    def grpc_addr(self, service: str) -> str:
        return self._component(service).roles()["grpc"]

    def pid(self, service: str) -> int:
        return self._component(service).pid

    @property
    def kafka(self) -> str:
        return next(c.address for c in self.components if c.kind == "broker")

    @property
    def operator(self) -> dict[str, str]:
        return self.credentials.bearer("operator")

    @property
    def key(self) -> dict[str, str]:
        """The gateway's bootstrap API key (predict, admin)."""
        return self.credentials.gateway_bearer()

    def channel(self, service: str, identity: str | None = "operator") -> grpc.Channel:
        """A gRPC channel to `service` calling as `identity` (None: with no credential)."""
        channel = grpc.insecure_channel(self.grpc_addr(service))
        return authenticated_channel(channel, self.credentials.token(identity)) if identity else channel

    def log(self, service: str) -> str:
        return Path(self._component(service).log).read_text(errors="replace")

    def metric(self, service: str, name: str, **labels: str) -> float:
        """Sum of a metric's samples on a service's /metrics whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(f"{self.url(service)}/metrics", timeout=10).text.splitlines():
            if line.startswith((name + "{", name + " ")):
                head, _, value = line.rpartition(" ")
                if all(f'{k}="{v}"' in head for k, v in labels.items()):
                    total += float(value)
        return total

    def label_values(self, service: str, name: str, label: str) -> set[str]:
        """The distinct values a metric's label takes on a service's /metrics."""
        values = set()
        for line in httpx.get(f"{self.url(service)}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "{") and f'{label}="' in line:
                values.add(line.split(f'{label}="', 1)[1].split('"', 1)[0])
        return values

    def assert_alive(self) -> None:
        """Every service's process runs and answers /healthz and /readyz 200."""
        for name in SERVICES:
            assert supervisor.pid_alive(self.pid(name)), f"{name} died:\n{self.log(name)[-3000:]}"
            assert httpx.get(f"{self.url(name)}/healthz", timeout=10).status_code == 200, name
            ready = httpx.get(f"{self.url(name)}/readyz", timeout=10)
            assert ready.status_code == 200, f"{name} not ready: {ready.text}"

    def rss(self) -> dict[str, float]:
        return {name: rss_mb(self.pid(name)) for name in SERVICES}

    def start_gateway(self, database_url: str = "", **overrides: str) -> str:
        """Another gateway on this stack's model server, with settings overridden (and its own key table
        when `database_url` is given); its base URL."""
        http, grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "FLYWHEEL_HOME": str(self.home),
            "FLYWHEEL_KAFKA_BOOTSTRAP": self.kafka,
            "FLYWHEEL_GATEWAY_HTTP_PORT": str(http),
            "FLYWHEEL_GATEWAY_GRPC_PORT": str(grpc_port),
            "FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR": self.url("modelserver").removeprefix("http://"),
            "FLYWHEEL_GATEWAY_MODEL_REPOSITORY": str(self.home / "models"),
            "FLYWHEEL_GATEWAY_EVENTS": "false",
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            **self.credentials.service_env(spec("gateway")),
            **{f"FLYWHEEL_GATEWAY_{k.upper()}": v for k, v in overrides.items()},
            **({"FLYWHEEL_DATABASE_URL": database_url} if database_url else {}),
        }
        log = (self.home / "logs" / f"gateway-extra-{http}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, stdout=log, stderr=log)
        self.extra.append(proc)
        url = f"http://127.0.0.1:{http}"
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 60, proc=proc, message="gateway")
        return url


def start_stack(home: Path) -> Stack:
    """`flywheel up` on free ports under `home`, the digits test models served (production: v1)."""
    write_repository(home / "models")  # digits v1, v2 and v3 (v3 fails at run time on some inputs)
    components = supervisor.up(home, free_ports=True, extra_env=STACK_ENV, progress=lambda _: None)
    s = Stack(home, components, StackCredentials.load(home))
    try:
        route = {"production": "1", "canary": "", "canary_weight": 0.0}
        r = httpx.put(f"{s.url('gateway')}/admin/routes/{MODEL}", json=route, headers=s.key, timeout=10)
        assert r.status_code == 200, r.text
        s.assert_alive()
    except BaseException:
        stop_stack(s)
        raise
    return s


def stop_stack(s: Stack) -> None:
    for proc in s.extra:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    supervisor.down(s.home, progress=lambda _: None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("security-stack"))
    try:
        yield s
    finally:
        stop_stack(s)

"""The whole stack as local processes on 127.0.0.1 (`flywheel up | status | down`).

State (PIDs, addresses) goes to `<home>/run/state.json`, credentials to `<home>/run/credentials.json`
(credentials.py: made once per home, each service given only its own); logs to `<home>/logs/<name>.log`.
Every process is started in its own session so `up` can return while they run, and `down`
stops exactly the PIDs it recorded (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from services.devstack.brokers import Broker, start_broker
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port, port_open
from services.devstack.stack import ServiceSpec, StackContext, available_services

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_SRC = ROOT / "infra" / "prometheus"


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says which part and why."""


@dataclass
class Component:
    name: str
    pid: int
    address: str
    health_url: str
    log: str
    kind: str = "service"

    def roles(self) -> dict[str, str]:
        """A service's addresses by role ({"http": "127.0.0.1:8080", "grpc": …}), parsed back from `address`."""
        return dict(part.split(" ", 1) for part in self.address.split(", ") if " " in part)


def state_path(home: Path) -> Path:
    return home / "run" / "state.json"


def read_state(home: Path) -> list[Component]:
    path = state_path(home)
    if not path.exists():
        return []
    return [Component(**c) for c in json.loads(path.read_text())["components"]]


def write_state(home: Path, components: list[Component]) -> None:
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"components": [asdict(c) for c in components]}, indent=2))
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def probe(component: Component) -> str:
    if not pid_alive(component.pid):
        return "stopped"
    if component.health_url.startswith("tcp://"):
        host, port = component.health_url[6:].rsplit(":", 1)
        return "ready" if port_open(host, int(port)) else "starting"
    try:
        r = httpx.get(component.health_url, timeout=2.0)
        return "ready" if r.status_code == 200 else f"not ready ({r.status_code})"
    except httpx.HTTPError:
        return "starting"


# -- start ------------------------------------------------------------------------------------
def _popen(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120, log_path: Path | None = None) -> None:
    """Poll `url` until it answers 200; StackError (with the log's tail) when `proc` exits or time runs out."""
    name = log_path.stem if log_path is not None else url
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path is not None else ""
            raise StackError(f"{name} exited with status {proc.returncode} while starting:\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StackError(f"{name} not ready at {url} after {timeout_s:.0f}s" + (f"; see {log_path}" if log_path else ""))


def start_prometheus(home: Path, targets: dict[str, str], port: int) -> Component | None:
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    conf_dir = home / "prometheus"
    if conf_dir.exists():
        shutil.rmtree(conf_dir)
    shutil.copytree(PROMETHEUS_SRC, conf_dir, ignore=shutil.ignore_patterns("tests"))
    sd = conf_dir / "targets"
    sd.mkdir(exist_ok=True)
    for name, address in targets.items():
        (sd / f"{name}.json").write_text(json.dumps([{"targets": [address], "labels": {"service": name}}]))
    log_path = home / "logs" / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={conf_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]
    proc = _popen(cmd, log_path, dict(os.environ))
    url = f"http://127.0.0.1:{port}/-/ready"
    wait_ready(url, proc, 30, log_path)
    return Component("prometheus", proc.pid, f"127.0.0.1:{port}", url, str(log_path), kind="metrics")


def launch_service(
    spec: ServiceSpec, ctx: StackContext, extra_env: dict[str, str], credentials: StackCredentials
) -> tuple[Component, subprocess.Popen[bytes]]:
    """Start a service's process without waiting for it (see `wait_ready`), with its credentials."""
    ports = ctx.ports[spec.name]
    env = dict(os.environ)
    env.update(
        {
            "FLYWHEEL_HOME": str(ctx.home.resolve()),
            "FLYWHEEL_KAFKA_BOOTSTRAP": ctx.kafka_bootstrap,
            "PYTHONUNBUFFERED": "1",
        }
    )
    for role, port in ports.items():
        env[f"{spec.env_prefix}{role.upper()}_PORT"] = str(port)
    # Never a credential inherited from the shell that ran `flywheel up`: each service gets its own.
    for inherited in ("FLYWHEEL_SERVICE_TOKEN", "FLYWHEEL_TRUSTED_CALLERS"):
        env.pop(inherited, None)
    env.update(credentials.service_env(spec))
    env.update(spec.env(ctx))
    env.update(extra_env)
    log_path = ctx.home / "logs" / f"{spec.name}.log"
    proc = _popen([sys.executable, "-m", spec.module], log_path, env)
    health = f"http://127.0.0.1:{ports['http']}/readyz"
    address = ", ".join(f"{role} 127.0.0.1:{p}" for role, p in ports.items())
    return Component(spec.name, proc.pid, address, health, str(log_path)), proc


def up(
    home: Path,
    kafka: str = "tansu",
    bootstrap: str | None = None,
    kafka_port: int = 9092,
    prometheus_port: int = 9090,
    only: list[str] | None = None,
    free_ports: bool = False,
    extra_env: dict[str, str] | None = None,
    progress: callable = print,  # type: ignore[valid-type]
) -> list[Component]:
    """Start broker, Prometheus and services; return once every part is ready."""
    running = [c for c in read_state(home) if pid_alive(c.pid)]
    if running:
        raise StackError(
            f"a stack is already running from {home} ({', '.join(c.name for c in running)}); run `flywheel down` first"
        )
    home.mkdir(parents=True, exist_ok=True)
    credentials = StackCredentials.for_home(home)
    components: list[Component] = []
    try:
        if bootstrap is None:
            port = free_port() if free_ports else kafka_port
            if not free_ports and port_open("127.0.0.1", port):
                raise StackError(f"port {port} is taken: pass --kafka-port, or --bootstrap to use that broker")
            progress(f"starting {kafka} broker on 127.0.0.1:{port}")
            broker: Broker = start_broker(kafka, home / "kafka", port)
            bootstrap = broker.bootstrap
            components.append(
                Component(
                    f"kafka ({kafka})",
                    broker.process.pid,
                    bootstrap,
                    f"tcp://{bootstrap}",
                    str(broker.log_path),
                    "broker",
                )
            )
            write_state(home, components)
        from services.events import ensure_topics

        ensure_topics(bootstrap)
        specs = [s for s in available_services() if only is None or s.name in only]
        ports = {s.name: {role: (free_port() if free_ports else p) for role, p in s.ports.items()} for s in specs}
        ctx = StackContext(home=home, kafka_bootstrap=bootstrap, ports=ports)
        prom_port = free_port() if free_ports else prometheus_port
        # All at once: each imports its libraries (seconds of CPU) while the others do; a service
        # that needs another (the gateway its model server) waits for it in its own readiness.
        launched = []
        for s in specs:
            progress(f"starting {s.name}")
            component, proc = launch_service(s, ctx, extra_env or {}, credentials)
            components.append(component)
            launched.append((s, component, proc))
        write_state(home, components)
        for s, component, proc in launched:
            wait_ready(component.health_url, proc, s.ready_timeout_s, Path(component.log))
            progress(f"{s.name} ready")
        progress("starting prometheus" if shutil.which("prometheus") else "prometheus not installed: skipped")
        prom = start_prometheus(home, {s.name: ctx.addr(s.name, "http") for s in specs}, prom_port)
        if prom is not None:
            components.append(prom)
            write_state(home, components)
    except BaseException:
        write_state(home, components)
        down(home, progress=lambda _msg: None)
        raise
    return components


def down(home: Path, grace_s: float = 30.0, progress: callable = print) -> list[str]:  # type: ignore[valid-type]
    """Stop what `up` started, services first and the broker last; return the names stopped."""
    components = read_state(home)
    stopped: list[str] = []
    for comp in reversed(components):
        if not pid_alive(comp.pid):
            continue
        progress(f"stopping {comp.name} (pid {comp.pid})")
        _terminate(comp.pid, grace_s)
        stopped.append(comp.name)
    if state_path(home).exists():
        state_path(home).unlink()
    return stopped


def _terminate(pid: int, grace_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

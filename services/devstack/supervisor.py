"""The whole stack as local processes on 127.0.0.1 (`flywheel up | status | restart | down`).

`up` plans every component (command, ports, environment) and hands the plan to the supervisor
daemon (`daemon.py`), which starts, watches and restarts them; `up` returns once each is ready.
State (PIDs, states, restarts, last exits) is in `<home>/run/state.json`, written by the daemon;
logs are in `<home>/logs/<name>.log`; credentials in `<home>/run/credentials.json` (credentials.py:
made once per home, each service given only its own). `down` stops the daemon, which stops its children
(SIGTERM, then SIGKILL after a grace period), and anything a dead daemon left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import httpx

from services.devstack.brokers import prepare_apache_kafka, tansu_command
from services.devstack.credentials import StackCredentials
from services.devstack.daemon import (  # noqa: F401 - log_tail and pid_alive are part of this module's API
    ChildSpec,
    control_dir,
    load_plan,
    log_tail,
    pid_alive,
    pid_path,
    send_command,
    write_plan,
)
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
    # Written by the supervisor daemon; see daemon.py for what each state means.
    state: str = "running"
    restarts: int = 0
    started_at: float = 0.0
    last_exit: str = ""
    last_log: list[str] = field(default_factory=list)
    cluster_id: str = ""

    def roles(self) -> dict[str, str]:
        """A service's addresses by role ({"http": "127.0.0.1:8080", "grpc": …}), parsed back from `address`."""
        return dict(part.split(" ", 1) for part in self.address.split(", ") if " " in part)


def state_path(home: Path) -> Path:
    return home / "run" / "state.json"


def read_state(home: Path) -> list[Component]:
    path = state_path(home)
    if not path.exists():
        return []
    known = {f.name for f in fields(Component)}
    try:
        raw = json.loads(path.read_text())["components"]
    except (OSError, ValueError, KeyError):
        return []
    return [Component(**{k: v for k, v in c.items() if k in known}) for c in raw]


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
    """Prometheus on its own, unsupervised (for tests that need only it); None when not installed."""
    spec = _prometheus_spec(home, targets, port)
    if spec is None:
        return None
    proc = _popen(spec.cmd, Path(spec.log), dict(os.environ))
    wait_ready(spec.health_url, proc, 30, Path(spec.log))
    return Component(spec.name, proc.pid, spec.address, spec.health_url, spec.log, kind=spec.kind)


def _service_spec(spec: ServiceSpec, ctx: StackContext, extra_env: dict[str, str]) -> ChildSpec:
    ports = ctx.ports[spec.name]
    env = {
        "FLYWHEEL_HOME": str(ctx.home.resolve()),
        "FLYWHEEL_KAFKA_BOOTSTRAP": ctx.kafka_bootstrap,
        "PYTHONUNBUFFERED": "1",
        # Never a credential inherited from the shell that ran `flywheel up`: each service gets its own.
        "FLYWHEEL_SERVICE_TOKEN": "",
        "FLYWHEEL_TRUSTED_CALLERS": "",
    }
    for role, port in ports.items():
        env[f"{spec.env_prefix}{role.upper()}_PORT"] = str(port)
    env.update(StackCredentials.for_home(ctx.home).service_env(spec))
    env.update(spec.env(ctx))
    env.update(extra_env)
    return ChildSpec(
        name=spec.name,
        kind="service",
        cmd=[sys.executable, "-m", spec.module],
        env=env,
        log=str(ctx.home / "logs" / f"{spec.name}.log"),
        address=", ".join(f"{role} 127.0.0.1:{p}" for role, p in ports.items()),
        health_url=f"http://127.0.0.1:{ports['http']}/readyz",
    )


def _broker_spec(kind: str, home: Path, port: int) -> ChildSpec:
    address = f"127.0.0.1:{port}"
    name = f"kafka ({kind})"
    if kind == "tansu":
        cmd = tansu_command(port)[:-2]  # the daemon adds a fresh --cluster-id at every start
        log = home / "logs" / "tansu.log"
        return ChildSpec(name, "broker", cmd, {}, str(log), address, f"tcp://{address}", True, True)
    if kind == "apache":
        # Under the home, kept across restarts and `down`/`up`: the broker's log is the events.
        work = home / "kafka" / "apache"
        controller = _kept_controller_port(work)
        cmd = prepare_apache_kafka(work, port, controller)
        return ChildSpec(name, "broker", cmd, {}, str(work / "kafka.log"), address, f"tcp://{address}")
    raise ValueError(f"unknown broker kind {kind!r}: use 'tansu' or 'apache'")


def _kept_controller_port(work: Path) -> int:
    path = work / "controller.port"
    if path.exists():
        port = int(path.read_text())
        if not port_open("127.0.0.1", port):
            return port
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(str(port))
    return port


def _prometheus_spec(home: Path, targets: dict[str, str], port: int) -> ChildSpec | None:
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
    cmd = [
        binary,
        f"--config.file={conf_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]
    log = home / "logs" / "prometheus.log"
    return ChildSpec(
        "prometheus", "metrics", cmd, {}, str(log), f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/-/ready"
    )


def supervisor_pid(home: Path) -> int:
    """The running supervisor daemon's pid, 0 when none runs for this home."""
    try:
        pid = int(json.loads(pid_path(home).read_text()))
    except (OSError, ValueError):
        return 0
    return pid if pid_alive(pid) else 0


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
    foreground_pid: int = 0,
    timeout_s: float = 240.0,
) -> list[Component]:
    """Start the stack under a supervisor daemon and return once every part is ready.

    On a partly running stack (a daemon alive for `home`) it starts only what is missing: new
    services and the ones stopped or crash-looping, with the ports they had.
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    running = read_state(home)
    daemon = supervisor_pid(home)
    if daemon:
        specs = _missing_specs(home, running, only, free_ports, extra_env or {}, prometheus_port)
        progress(f"a stack is running from {home}: starting only what is missing")
        send_command(home, "ensure", specs=[asdict(s) for s in specs])
        wanted = {c.name for c in running} | {s.name for s in specs}
        return _wait_stack(home, wanted, daemon, timeout_s, progress)
    # A daemon that died leaves its children running: adopt them rather than start a second copy.
    alive = {c.name: c for c in running if pid_alive(c.pid)}
    specs: list[ChildSpec] = []
    if bootstrap is None:
        port = free_port() if free_ports else kafka_port
        kept = next((c for c in alive.values() if c.kind == "broker"), None)
        if kept is not None:
            port = int(kept.address.rsplit(":", 1)[1])
        elif port_open("127.0.0.1", port):
            raise StackError(f"port {port} is taken: pass --kafka-port, or --bootstrap to use that broker")
        progress(f"starting {kafka} broker on 127.0.0.1:{port}")
        specs.append(_broker_spec(kafka, home, port))
        bootstrap = specs[0].address
    chosen = [s for s in available_services() if only is None or s.name in only]
    ports = {s.name: {role: (free_port() if free_ports else p) for role, p in s.ports.items()} for s in chosen}
    for name, comp in alive.items():
        if name in ports:
            ports[name] = {role: int(a.rsplit(":", 1)[1]) for role, a in comp.roles().items()}
    ctx = StackContext(home=home, kafka_bootstrap=bootstrap, ports=ports)
    specs += [_service_spec(s, ctx, extra_env or {}) for s in chosen]
    prom_port = free_port() if free_ports else prometheus_port
    if "prometheus" in alive:
        prom_port = int(alive["prometheus"].address.rsplit(":", 1)[1])
    prom = _prometheus_spec(home, {s.name: ctx.addr(s.name, "http") for s in chosen}, prom_port)
    progress("prometheus not installed: skipped" if prom is None else f"prometheus on 127.0.0.1:{prom_port}")
    if prom is not None:
        specs.append(prom)
    for spec in specs:
        if spec.name in alive:
            spec.adopt_pid = alive[spec.name].pid
            progress(f"{spec.name} still running (pid {spec.adopt_pid}): adopted")
    write_plan(home, specs)
    shutil.rmtree(control_dir(home), ignore_errors=True)
    daemon_log = home / "logs" / "supervisor.log"
    daemon_log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "services.devstack.daemon", "--home", str(home)]
    if foreground_pid:
        cmd += ["--parent-pid", str(foreground_pid)]
    with daemon_log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    progress(f"supervisor started (pid {proc.pid}); starting {', '.join(s.name for s in specs)}")
    try:
        return _wait_stack(home, {s.name for s in specs}, proc.pid, timeout_s, progress, proc)
    except BaseException:
        down(home, progress=lambda _msg: None)
        raise


def _missing_specs(
    home: Path,
    running: list[Component],
    only: list[str] | None,
    free_ports: bool,
    extra_env: dict[str, str],
    prometheus_port: int,
) -> list[ChildSpec]:
    """The plan's specs (the ports they had) plus services this `up` asks for that never ran."""
    planned = {s.name: s for s in load_plan(home)}
    broker = next((c for c in running if c.kind == "broker"), None)
    bootstrap = broker.address if broker else next(iter(planned.values())).env.get("FLYWHEEL_KAFKA_BOOTSTRAP", "")
    new = [s for s in available_services() if (only is None or s.name in only) and s.name not in planned]
    ports = {s.name: {role: (free_port() if free_ports else p) for role, p in s.ports.items()} for s in new}
    for name, spec in planned.items():
        if spec.kind == "service":
            ports[name] = {
                role: int(a.rsplit(":", 1)[1]) for role, a in (part.split(" ", 1) for part in spec.address.split(", "))
            }
    ctx = StackContext(home=home, kafka_bootstrap=bootstrap, ports=ports)
    specs = list(planned.values()) + [_service_spec(s, ctx, extra_env) for s in new]
    write_plan(home, specs)
    return specs


def _wait_stack(
    home: Path,
    names: set[str],
    daemon_pid: int,
    timeout_s: float,
    progress: callable,  # type: ignore[valid-type]
    daemon: subprocess.Popen[bytes] | None = None,
) -> list[Component]:
    """Until every named component is `running` (probed ready); StackError naming what failed."""
    deadline = time.monotonic() + timeout_s
    announced: set[str] = set()
    while time.monotonic() < deadline:
        alive = daemon.poll() is None if daemon is not None else pid_alive(daemon_pid)
        if not alive:
            tail = (home / "logs" / "supervisor.log").read_text(errors="replace")[-3000:]
            raise StackError(f"the supervisor exited while starting the stack:\n{tail}")
        components = {c.name: c for c in read_state(home)}
        for c in components.values():
            if c.name in names and c.state == "running" and c.name not in announced:
                announced.add(c.name)
                progress(f"{c.name} ready")
            if c.name in names and c.state == "crash-looping":
                raise StackError(
                    f"{c.name} keeps exiting ({c.last_exit}) and was given up; its log ({c.log}) ends:\n"
                    + "\n".join(c.last_log)
                )
        if names <= announced:
            return list(components.values())
        time.sleep(0.1)
    waiting = ", ".join(sorted(names - announced))
    raise StackError(f"not ready after {timeout_s:.0f}s: {waiting}; see {home / 'logs'}")


def restart(home: Path, name: str, timeout_s: float = 120.0) -> Component:
    """Restart one component through the daemon and wait until it is ready again."""
    daemon = supervisor_pid(home)
    if not daemon:
        raise StackError(f"no supervisor runs for {home}: start the stack with `flywheel up`")
    before = {c.name: c for c in read_state(home)}
    if name not in before:
        raise StackError(f"unknown component {name!r}; the stack has: {', '.join(before)}")
    send_command(home, "restart", name=name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = {c.name: c for c in read_state(home)}.get(name)
        if now is not None and now.started_at > before[name].started_at and now.state == "running":
            return now
        if now is not None and now.state == "crash-looping" and now.started_at > before[name].started_at:
            raise StackError(f"{name} keeps exiting ({now.last_exit}); its log ends:\n" + "\n".join(now.last_log))
        time.sleep(0.1)
    raise StackError(f"{name} not ready {timeout_s:.0f}s after the restart; see its log")


def down(home: Path, grace_s: float = 60.0, progress: callable = print) -> list[str]:  # type: ignore[valid-type]
    """Stop the supervisor (it stops services, then Prometheus, then the broker); return the names stopped."""
    components = read_state(home)
    stopped = [c.name for c in components if pid_alive(c.pid)]
    daemon = supervisor_pid(home)
    if daemon:
        progress(f"stopping the supervisor (pid {daemon}) and {len(stopped)} component(s)")
        _terminate(daemon, grace_s)
    # Whatever a dead daemon left behind, services first and the broker last.
    for comp in reversed(components):
        if pid_alive(comp.pid):
            progress(f"stopping {comp.name} (pid {comp.pid})")
            _terminate(comp.pid, 30.0)
    for path in (state_path(home), pid_path(home)):
        path.unlink(missing_ok=True)
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

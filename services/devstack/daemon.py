"""The supervisor daemon: owns the stack's processes and restarts the ones that exit unexpectedly.

`flywheel up` writes the plan (`<home>/run/plan.json`: every component's command, extra
environment, log and health check) and starts `python -m services.devstack.daemon --home H` in a
session of its own, so supervision outlives the command; `flywheel down` sends it SIGTERM and it
stops its children, services first and the broker last. Its pid is `<home>/run/supervisor.pid`;
what it knows of each child (state, restarts, start time, last exit) it writes to
`<home>/run/state.json` on every change, which is what `flywheel status` reads.

Restart policy, like systemd's `Restart=on-failure` with `StartLimitBurst`:
* an exit it did not ask for is restarted after a back-off that doubles from `BACKOFF_FIRST_S` up
  to `BACKOFF_MAX_S`, and starts again from the bottom once a run lasted `STABLE_S`;
* `CRASH_LOOP_EXITS` exits within `CRASH_LOOP_WINDOW_S` mark the child `crash-looping` with the
  last lines of its log, and it is left alone until `flywheel restart NAME` or `flywheel up`.
A broker that loses its state when it exits (Tansu on memory storage) takes the services with it:
they are stopped at once (so no client of the old broker joins the new one's consumer groups as a
member that then vanishes) and started again once the broker is back and the topics re-created,
so their consumers start from the new, empty log instead of positions that no longer exist.

Commands reach it as JSON files in `<home>/run/control/` (read within `TICK_S`), so the CLI needs
no socket and a command sent while it is busy waits for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from services.devstack.ports import port_open

log = logging.getLogger("flywheel.supervisor")

TICK_S = 0.1
PROBE_EVERY_S = 0.5
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_S = 60.0
STOP_GRACE_S = 30.0
LOG_TAIL_LINES = 20

STATES = ("starting", "running", "restarting", "crash-looping", "stopped")


@dataclass
class ChildSpec:
    """How to start one component; the same spec serves every restart (same ports, same settings)."""

    name: str
    kind: str  # "broker", "service" or "metrics"
    cmd: list[str]
    env: dict[str, str]  # on top of the daemon's own environment (the one `flywheel up` ran in)
    log: str
    address: str
    health_url: str  # http://…/readyz, or tcp://host:port for the broker
    # Memory storage: each start gets a new cluster id, so consumers (the lake) can tell the new,
    # empty log from the old one whose offsets it reuses.
    fresh_cluster_id: bool = False
    loses_state: bool = False
    adopt_pid: int = 0  # a child of a daemon that died: watched by pid until it exits


def run_dir(home: Path) -> Path:
    return home / "run"


def plan_path(home: Path) -> Path:
    return run_dir(home) / "plan.json"


def pid_path(home: Path) -> Path:
    return run_dir(home) / "supervisor.pid"


def control_dir(home: Path) -> Path:
    return run_dir(home) / "control"


def write_json_atomic(path: Path, data: object, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(data, indent=2))
    tmp.replace(path)


def send_command(home: Path, op: str, **args: object) -> None:
    """Queue a command for the daemon (`restart`, `ensure`)."""
    write_json_atomic(control_dir(home) / f"{time.time_ns()}-{uuid.uuid4().hex[:6]}.json", {"op": op, **args})


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "exited (status unknown: not our child)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16_384))
            return fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def probe_ready(health_url: str) -> bool:
    if health_url.startswith("tcp://"):
        host, port = health_url[6:].rsplit(":", 1)
        if not port_open(host, int(port)):
            return False
        from confluent_kafka.admin import AdminClient

        try:  # the port opens before the broker answers metadata
            AdminClient({"bootstrap.servers": f"{host}:{port}"}).list_topics(timeout=2)
            return True
        except Exception:  # noqa: BLE001 - not answering yet
            return False
    try:
        return httpx.get(health_url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    state: str = "stopped"
    restarts: int = 0
    started_at: float = 0.0  # wall clock, for uptime in `flywheel status`
    started_mono: float = 0.0
    last_exit: str = ""
    last_log: list[str] = field(default_factory=list)
    cluster_id: str = ""
    exits: deque[float] = field(default_factory=lambda: deque(maxlen=CRASH_LOOP_EXITS))
    failures: int = 0  # exits since the last stable run: the back-off's exponent
    next_start: float = 0.0
    next_probe: float = 0.0
    ever_ready: bool = False
    wait_for_broker: bool = False  # stopped with a broker that lost its state: start once it is back

    def backoff_s(self) -> float:
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, self.failures - 1))

    def record(self) -> dict[str, object]:
        s = self.spec
        return {
            "name": s.name,
            "pid": self.pid,
            "address": s.address,
            "health_url": s.health_url,
            "log": s.log,
            "kind": s.kind,
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "last_log": self.last_log,
            "cluster_id": self.cluster_id,
        }


class Supervisor:
    def __init__(self, home: Path, specs: list[ChildSpec], parent_pid: int = 0) -> None:
        self.home = home
        self.children: list[Child] = []
        self.stop = threading.Event()
        self.parent_pid = parent_pid  # `up --foreground`: the stack lives as long as that command
        self._dirty = True
        for spec in specs:
            self._add(spec)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._read_commands()
                for child in self.children:
                    self._watch(child)
                if self.parent_pid and not pid_alive(self.parent_pid):
                    log.info("the foreground `flywheel up` is gone: stopping the stack")
                    break
                if self._dirty:
                    self._write_state()
                self.stop.wait(TICK_S)
        finally:
            self._stop_all()

    def _watch(self, child: Child) -> None:
        now = time.monotonic()
        if child.state in ("starting", "running") and self._exited(child):
            self._on_exit(child, now)
            if child.spec.kind == "broker" and child.spec.loses_state:
                self._stop_services_with_broker()
        if child.state == "restarting" and now >= child.next_start and self._can_start(child):
            self._start(child)
        elif child.state == "starting" and now >= child.next_probe:
            child.next_probe = now + PROBE_EVERY_S
            if probe_ready(child.spec.health_url):
                child.state, child.ever_ready = "running", True
                self._dirty = True
                log.info("%s ready", child.spec.name)
                if child.spec.kind == "broker":
                    self._on_broker_ready(child)
        elif child.state == "running" and child.failures and now - child.started_mono >= STABLE_S:
            child.failures = 0  # a stable run: the next crash starts the back-off from the bottom

    def _exited(self, child: Child) -> bool:
        if child.proc is not None:
            return child.proc.poll() is not None
        return not pid_alive(child.pid)

    def _on_exit(self, child: Child, now: float) -> None:
        code = child.proc.returncode if child.proc is not None else None
        child.last_exit = exit_reason(code)
        child.exits.append(now)
        child.failures += 1
        child.proc = None
        self._dirty = True
        if len(child.exits) == CRASH_LOOP_EXITS and now - child.exits[0] <= CRASH_LOOP_WINDOW_S:
            child.state = "crash-looping"
            child.last_log = log_tail(child.spec.log)
            log.error("%s crash-looping (%s); not restarting it", child.spec.name, child.last_exit)
            return
        child.state = "restarting"
        child.next_start = now + child.backoff_s()
        log.warning("%s %s; restarting in %.1f s", child.spec.name, child.last_exit, child.backoff_s())

    def _can_start(self, child: Child) -> bool:
        """Services first start once the broker is ready; a restart does not wait for it, unless
        the service was stopped because the broker lost its state."""
        if child.spec.kind == "broker":
            return True
        if (child.ever_ready or child.restarts) and not child.wait_for_broker:
            return True
        return all(c.state == "running" for c in self.children if c.spec.kind == "broker")

    def _start(self, child: Child) -> None:
        spec = child.spec
        cmd = list(spec.cmd)
        if spec.fresh_cluster_id:
            child.cluster_id = f"flywheel-{uuid.uuid4().hex[:12]}"
            cmd += ["--cluster-id", child.cluster_id]
        if child.started_at:
            child.restarts += 1
        Path(spec.log).parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "ab") as out:
            child.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **spec.env},
                start_new_session=True,  # its own process group: stopping it stops what it started
            )
        child.pid = child.proc.pid
        child.state, child.wait_for_broker = "starting", False
        child.started_at, child.started_mono = time.time(), time.monotonic()
        child.next_probe = 0.0
        self._dirty = True
        log.info("%s started (pid %d)", spec.name, child.pid)

    def _on_broker_ready(self, broker: Child) -> None:
        from services.events import ensure_topics

        address = broker.spec.address
        try:
            ensure_topics(address)  # a broker that lost its state lost its topics too
        except Exception:  # services create what they need themselves: log and go on
            log.exception("could not create the topics on %s", address)

    def _stop_services_with_broker(self) -> None:
        services = [c for c in self.children if c.spec.kind == "service"]
        running = [c for c in services if c.state in ("starting", "running")]
        log.warning("the broker lost its state (memory storage): stopping %d services until it is back", len(running))
        _terminate_all([c.pid for c in running], grace_s=10.0)
        for c in running:
            if c.proc is not None:
                c.proc.wait()
            c.proc = None
            c.state, c.next_start = "restarting", 0.0
            c.last_exit = "restarted with the broker (its memory storage lost topics and offsets)"
        for c in services:
            if c.state == "restarting":
                c.wait_for_broker = True
        self._dirty = True

    # -- commands ---------------------------------------------------------------------------
    def _add(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        if spec.adopt_pid and pid_alive(spec.adopt_pid):
            child.pid, child.state, child.ever_ready = spec.adopt_pid, "starting", True
            child.started_at, child.started_mono = time.time(), time.monotonic()
        else:
            child.state, child.next_start = "restarting", 0.0
        self.children.append(child)
        self._dirty = True
        return child

    def _read_commands(self) -> None:
        folder = control_dir(self.home)
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            try:
                command = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # still being written (we rename into place, so only a stray file)
            path.unlink(missing_ok=True)
            try:
                self._apply(command)
            except Exception:  # a bad command must not take supervision down
                log.exception("command failed: %s", command)

    def _apply(self, command: dict) -> None:
        by_name = {c.spec.name: c for c in self.children}
        if command["op"] == "restart":
            child = by_name[command["name"]]
            if child.state in ("starting", "running"):
                _terminate_all([child.pid], STOP_GRACE_S)
                if child.proc is not None:
                    child.proc.wait()
                child.proc = None
                if child.spec.kind == "broker" and child.spec.loses_state:
                    self._stop_services_with_broker()
            child.exits.clear()
            child.failures, child.last_log = 0, []
            child.state, child.next_start = "restarting", 0.0
            child.last_exit = "restarted on request (`flywheel restart`)" if child.started_at else child.last_exit
            self._dirty = True
        elif command["op"] == "ensure":
            # `flywheel up` on a partly running stack: add what is new, start what is down.
            for raw in command["specs"]:
                spec = ChildSpec(**raw)
                child = by_name.get(spec.name)
                if child is None:
                    self._add(spec)
                elif child.state in ("stopped", "crash-looping"):
                    child.exits.clear()
                    child.failures, child.last_log = 0, []
                    child.state, child.next_start = "restarting", 0.0
                    self._dirty = True

    # -- state and stopping -----------------------------------------------------------------
    def _write_state(self) -> None:
        self._dirty = False
        write_json_atomic(
            run_dir(self.home) / "state.json",
            {"supervisor_pid": os.getpid(), "components": [c.record() for c in self.children]},
        )

    def _stop_all(self) -> None:
        """Services together, then Prometheus, then the broker; each gets SIGTERM, then SIGKILL."""
        for kind in ("service", "metrics", "broker"):
            group = [c for c in self.children if c.spec.kind == kind and c.state in ("starting", "running")]
            _terminate_all([c.pid for c in group], STOP_GRACE_S)
            for c in group:
                if c.proc is not None:
                    c.proc.wait()
                c.state, c.proc = "stopped", None
        state = run_dir(self.home) / "state.json"
        state.unlink(missing_ok=True)
        pid_path(self.home).unlink(missing_ok=True)


def _terminate_all(pids: list[int], grace_s: float) -> None:
    live = [p for p in pids if p]
    for pid in live:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        time.sleep(0.05)
    for pid in live:
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def load_plan(home: Path) -> list[ChildSpec]:
    return [ChildSpec(**raw) for raw in json.loads(plan_path(home).read_text())["components"]]


def write_plan(home: Path, specs: list[ChildSpec]) -> None:
    """The plan holds each service's environment, its token included: readable by its owner only."""
    write_json_atomic(plan_path(home), {"components": [asdict(s) for s in specs]}, private=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devstack.daemon", description=__doc__)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--parent-pid", type=int, default=0, help="stop the stack when this process ends")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe otherwise
    home: Path = args.home
    supervisor = Supervisor(home, load_plan(home), parent_pid=args.parent_pid)
    write_json_atomic(pid_path(home), os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop.set())
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

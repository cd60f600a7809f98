"""`flywheel up / status / restart / logs / down` with Tansu and Prometheus: ready, supervised,
taken over again after the supervisor itself died, then stopped, no stray process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from services.devstack.supervisor import pid_alive, read_state, supervisor_pid
from tests.support.required import require_binary


def _flywheel(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_status_down(tmp_path: Path) -> None:
    require_binary("prometheus", "apt-get install prometheus")
    home = tmp_path / "home"
    up = _flywheel(home, "up", "--free-ports", "--only", "none")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        components = read_state(home)
        names = [c.name for c in components]
        assert names[0] == "kafka (tansu)" and "prometheus" in names
        assert all(pid_alive(c.pid) for c in components)
        prom = next(c for c in components if c.name == "prometheus")
        config = httpx.get(f"http://{prom.address}/api/v1/status/config", timeout=5).json()
        assert "file_sd_configs" in config["data"]["yaml"]
        rules = httpx.get(f"http://{prom.address}/api/v1/rules", timeout=5).json()
        assert any(g["name"] == "flywheel-availability" for g in rules["data"]["groups"])

        status = _flywheel(home, "status")
        assert status.returncode == 0, status.stdout
        assert "running" in status.stdout and "prometheus" in status.stdout

        status = _flywheel(home, "status")
        assert "restarts" in status.stdout and "last exit" in status.stdout

        again = _flywheel(home, "up", "--free-ports", "--only", "none")
        assert again.returncode == 0 and "starting only what is missing" in again.stdout, again.stdout
        assert [c.pid for c in read_state(home)] == [c.pid for c in components]

        restarted = _flywheel(home, "restart", "prometheus")
        assert restarted.returncode == 0 and "ready" in restarted.stdout, restarted.stdout + restarted.stderr
        prom_after = next(c for c in read_state(home) if c.name == "prometheus")
        assert prom_after.pid != prom.pid and prom_after.restarts == 1 and "on request" in prom_after.last_exit

        # `kafka` names the broker; a Tansu restart is a new broker, with a new cluster id
        broker = components[0]
        restarted = _flywheel(home, "restart", "kafka")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        broker_after = read_state(home)[0]
        assert broker_after.pid != broker.pid and broker_after.cluster_id != broker.cluster_id
        components[0] = broker_after

        logs = _flywheel(home, "logs", "supervisor", "-n", "50")
        assert logs.returncode == 0 and "prometheus" in logs.stdout
        assert _flywheel(home, "logs", "nosuch").returncode == 2

        # The supervisor killed: its children run on; `up` adopts them instead of starting a second stack.
        os.kill(supervisor_pid(home), signal.SIGKILL)
        orphaned = _flywheel(home, "status")
        assert orphaned.returncode == 1 and "supervisor is not running" in orphaned.stdout
        adopted = _flywheel(home, "up", "--free-ports", "--only", "none")
        assert adopted.returncode == 0 and "adopted" in adopted.stdout, adopted.stdout
        assert {c.pid for c in read_state(home)} == {components[0].pid, prom_after.pid}
        assert _flywheel(home, "status").returncode == 0
    finally:
        pids = [c.pid for c in read_state(home)]
        down = _flywheel(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids and not any(pid_alive(p) for p in pids), "a process survived `flywheel down`"
    assert not (home / "run" / "state.json").exists()
    assert _flywheel(home, "status").returncode == 3

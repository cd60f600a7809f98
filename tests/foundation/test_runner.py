"""`flywheel up / status / down` with Tansu and Prometheus: ready, then stopped, no stray process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from services.devstack.supervisor import pid_alive, read_state
from tests.support.required import require_binary


def _flywheel(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
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
        assert "ready" in status.stdout and "prometheus" in status.stdout

        again = _flywheel(home, "up", "--free-ports", "--only", "none")
        assert again.returncode == 1 and "already running" in again.stdout
    finally:
        pids = [c.pid for c in read_state(home)]
        down = _flywheel(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids and not any(pid_alive(p) for p in pids), "a process survived `flywheel down`"
    assert not (home / "run" / "state.json").exists()
    assert _flywheel(home, "status").returncode == 3

"""The README's commands, as a new user meets them.

Every command in the README's ```bash blocks is checked: a `make` target must exist (`make -n`),
a `flywheel` command must parse with the real parser (nothing runs). Then the local stack is walked
for real, in the README's order: a stack without a model makes the load test stop at once, naming
the command that serves one; `flywheel up --with-example-model` (what `make up` runs), `flywheel
status`, the load test (what `make loadtest` runs) and `flywheel down --home DIR` (the option after
the command, as the demo prints it). On purpose, unlike the README: a temporary FLYWHEEL_HOME and
free ports, so the test never touches a developer's own stack or the default ports.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.cli.main import build_parser
from services.devstack.supervisor import read_state

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        block = block.replace("\\\n", " ")  # a command continued on the next line is one command
        for line in block.splitlines():
            line = line.split(" # ", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_exists() -> None:
    commands = readme_commands()
    assert "make demo" in commands and "make test" in commands and "make up" in commands
    checked = 0
    for line in commands:
        if not line.startswith(("make ", ".venv/bin/flywheel ")) and line != "make":
            continue  # curl and the like (a JSON body may span lines): not ours to parse
        words = shlex.split(line)
        if words[0] == "make":
            target = [w for w in words[1:] if "=" not in w]
            dry = subprocess.run(["make", "-n", *target], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert dry.returncode == 0, f"{line}: {dry.stderr}"
            checked += 1
        elif words[0].endswith("bin/flywheel"):
            argv = ["gateway" if w == "SERVICE" else w for w in words[1:] if w != "--help"]
            try:
                build_parser().parse_args(argv)
            except SystemExit as exc:
                pytest.fail(f"README command does not parse: {line} (exit {exc.code})")
            checked += 1
    assert checked >= 12


def _flywheel(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--home", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _loadtest(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # What `make loadtest` runs (see the Makefile), on this stack's home.
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--home", str(home), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metric(base: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.mark.slow
def test_the_readme_walk_on_a_real_stack(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    up = _flywheel(home, "up", "--free-ports")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        refused = _loadtest(home, "--duration", "5")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "serves no ready model 'digits'" in refused.stderr and "make up" in refused.stderr
    finally:
        down = _flywheel(home, "down")
        assert down.returncode == 0, down.stdout + down.stderr

    home = tmp_path / "example"
    up = _flywheel(home, "up", "--free-ports", "--with-example-model", timeout=900)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "example model digits v1 in production and loaded" in up.stdout
        status = _flywheel(home, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        # Function, not speed: the SLO is set out of reach of a loaded machine (bench/ measures speed).
        load = _loadtest(home, "--duration", "10", "--users", "2", "--rate", "5", "--slo-ms", "60000")
        assert load.returncode == 0, load.stdout + load.stderr
        assert '"failures": 0' in load.stdout
        monitor = next(f"http://{c.roles()['http']}" for c in read_state(home) if c.name == "monitor")
        # Locust's traffic is synthetic: the monitor left it out and raised nothing.
        assert _metric(monitor, "flywheel_monitor_predictions_ignored_total", reason="synthetic") > 0
        assert _metric(monitor, "flywheel_monitor_drift_alerts_total") == 0
        assert _metric(monitor, "flywheel_monitor_train_requests_total") == 0
    finally:
        down = _flywheel(home, "down")
        assert down.returncode == 0, down.stdout + down.stderr
    assert read_state(home) == []

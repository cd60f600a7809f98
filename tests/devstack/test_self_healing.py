"""A `flywheel up` stack heals itself: SIGKILL each component under label and prediction traffic.

Each kill must bring the component back by itself (same ports) and the whole stack back to ready
within BACK_WITHIN_S; afterwards every label ingest accepted is in the lake exactly once, and
predictions failed only inside a kill's restart window. The numbers are printed (pytest -s).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from services.devstack.brokers import kafka_jars_present
from tests.devstack.stack import Stack, Traffic, flywheel, start_stack
from tests.support.required import unavailable
from tests.support.waiting import wait_until

# Generous: 2 shared cores, and a restarted service imports its libraries (seconds of CPU) again.
BACK_WITHIN_S = 120.0
# A failed prediction counts against a kill when it falls between the kill and the stack ready
# again, plus this much for clients whose requests were in flight or whose connection broke.
WINDOW_SLACK_S = 3.0
SERVICES = ["ingest", "lake", "gateway", "modelserver", "trainer", "monitor", "prometheus"]


def _kill_under_traffic(stack: Stack, names: list[str], run: str) -> None:
    assert stack.all_ready()
    traffic = Traffic(stack, run, seed=0).start()
    windows: list[tuple[str, float, float]] = []
    try:
        wait_until(lambda: len(traffic.accepted) >= 100 and traffic.predictions_ok >= 50, 60, message="traffic")
        for name in names:
            time.sleep(WINDOW_SLACK_S + 1.0)  # traffic between kills; windows never overlap
            killed_at = time.monotonic()
            pid = stack.kill(name)
            back = stack.wait_back(name, pid, BACK_WITHIN_S)
            windows.append((name, killed_at, killed_at + back))
            print(f"killed {name} (pid {pid}): stack ready again after {back:.1f} s")
        time.sleep(2.0)
    finally:
        traffic.stop()
    comps = stack.components()
    for name in names:
        assert comps[name].restarts >= 1 and "SIGKILL" in comps[name].last_exit, comps[name]

    accepted = set(traffic.accepted)
    assert len(accepted) == len(traffic.accepted)
    # Every accepted label in the lake, not just as many rows: labels refused while ingest was down
    # may land too, so a count can be reached while the last accepted batch is still in flight.
    wait_until(lambda: accepted <= stack.lake_labels(run)[1], 180, interval_s=1.0, message="lake")
    rows, in_lake = stack.lake_labels(run)
    lost, duplicated = len(accepted - in_lake), rows - len(in_lake)
    unknown = in_lake - accepted - set(traffic.refused)
    outside = [t for t in traffic.prediction_failures if not any(a <= t <= b + WINDOW_SLACK_S for _, a, b in windows)]
    per_kill = {name: sum(a <= t <= b + WINDOW_SLACK_S for t in traffic.prediction_failures) for name, a, b in windows}
    print(
        f"labels accepted {len(accepted)}, refused while ingest was down {len(traffic.refused)}, "
        f"in the lake {len(in_lake)} ({len(in_lake - accepted)} of them refused but stored), "
        f"lost {lost}, duplicated {duplicated}; predictions ok {traffic.predictions_ok}, "
        f"failed {len(traffic.prediction_failures)} (per kill {per_kill}, outside restart windows {len(outside)}; "
        f"why: {dict(traffic.failure_reasons)})"
    )
    assert lost == 0 and not unknown
    assert duplicated == 0
    assert not outside, f"{len(outside)} predictions failed outside every restart window"
    assert traffic.predictions_ok > 0


@pytest.fixture(scope="module")
def tansu_stack(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("healing") / "home"
    stack = start_stack(home)
    try:
        yield stack
    finally:
        down = flywheel(home, "down")
        assert down.returncode == 0, down.stdout + down.stderr


def test_every_service_killed_comes_back(tansu_stack: Stack) -> None:
    # The stack runs Prometheus only where it is installed (Debian's `prometheus`; `.ci/run` installs it).
    present = tansu_stack.components()
    names = [name for name in SERVICES if name in present]
    _kill_under_traffic(tansu_stack, names, f"svc-{uuid.uuid4().hex[:6]}")
    if "prometheus" not in names:
        unavailable("prometheus not installed (apt-get install prometheus): its kill not tried, the others passed")


def test_memory_broker_killed_comes_back(tansu_stack: Stack) -> None:
    """Tansu keeps everything in memory: the supervisor re-creates the topics and restarts the
    services, ingest re-sends what the lost broker had acknowledged, and the lake, seeing a new
    log, stores each label once."""
    _kill_under_traffic(tansu_stack, ["kafka (tansu)"], f"tansu-{uuid.uuid4().hex[:6]}")


def test_apache_broker_killed_keeps_its_log(tmp_path: Path) -> None:
    if not kafka_jars_present():
        unavailable("Apache Kafka jars missing: run `make kafka-jars`")
    home = tmp_path / "home"
    stack = start_stack(home, "--kafka", "apache", "--only", "ingest,lake,gateway,modelserver,trainer")
    try:
        data = home / "kafka" / "apache" / "data"
        assert (data / "meta.properties").exists()
        _kill_under_traffic(stack, ["kafka (apache)"], f"apache-{uuid.uuid4().hex[:6]}")
        assert stack.components()["kafka (apache)"].restarts == 1
    finally:
        down = flywheel(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert (home / "kafka" / "apache" / "data" / "meta.properties").exists(), "down must keep the broker's log"

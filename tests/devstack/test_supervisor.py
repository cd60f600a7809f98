"""The supervisor daemon's restart policy on real processes (small Python programs, no stack)."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack import daemon
from services.devstack.daemon import ChildSpec, Supervisor, send_command
from services.devstack.ports import free_port
from services.devstack.supervisor import read_state
from tests.support.waiting import wait_until


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator:
    running: list[tuple[Supervisor, threading.Thread]] = []

    def start(*specs: ChildSpec) -> Supervisor:
        sup = Supervisor(tmp_path, list(specs))
        thread = threading.Thread(target=sup.run, daemon=True)
        thread.start()
        running.append((sup, thread))
        return sup

    yield start
    for sup, thread in running:
        sup.stop.set()
        thread.join(60)


def _state(home: Path, name: str):
    return next(c for c in read_state(home) if c.name == name)


def test_a_crashing_child_backs_off_then_is_crash_looping(tmp_path: Path, supervise) -> None:
    starts = tmp_path / "starts"
    program = f"import sys, time; open({str(starts)!r}, 'a').write(f'{{time.time()}}\\n'); print('boom'); sys.exit(3)"
    spec = ChildSpec(
        "crasher",
        "service",
        [sys.executable, "-c", program],
        {},
        str(tmp_path / "crasher.log"),
        "-",
        "http://127.0.0.1:1/",
    )
    supervise(spec)
    wait_until(lambda: _state(tmp_path, "crasher").state == "crash-looping", 60, interval_s=0.1, message="crash loop")
    comp = _state(tmp_path, "crasher")
    assert comp.restarts == daemon.CRASH_LOOP_EXITS - 1 and comp.last_exit == "exit code 3"
    assert comp.last_log[-1] == "boom"
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.5 s, 1 s, 2 s, 4 s between an exit and the next start (each run itself takes a little)
    for i, gap in enumerate(gaps):
        assert gap >= daemon.BACKOFF_FIRST_S * 2**i, gaps
    # left alone: no sixth start
    assert not wait_until_false(lambda: len(starts.read_text().split()) > daemon.CRASH_LOOP_EXITS, 3.0)
    # `flywheel restart` clears the loop and starts it again
    send_command(tmp_path, "restart", name="crasher")
    wait_until(lambda: len(starts.read_text().split()) > daemon.CRASH_LOOP_EXITS, 10, message="restart")


def wait_until_false(condition, seconds: float) -> bool:
    """True if `condition` became true within `seconds`."""
    try:
        wait_until(condition, seconds, interval_s=0.1)
        return True
    except AssertionError:
        return False


def test_a_killed_child_comes_back_on_its_port_with_the_reason(tmp_path: Path, supervise) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    spec = ChildSpec(
        "web", "service", cmd, {}, str(tmp_path / "web.log"), f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/"
    )
    supervise(spec)
    wait_until(lambda: _state(tmp_path, "web").state == "running", 30, message="web running")
    first = _state(tmp_path, "web").pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: (c := _state(tmp_path, "web")).pid != first and c.state == "running", 30, message="web back")
    comp = _state(tmp_path, "web")
    assert comp.restarts == 1 and comp.last_exit == "killed by SIGKILL"
    # a requested restart is no crash: same port, a new pid, the reason says so
    send_command(tmp_path, "restart", name="web")
    wait_until(lambda: _state(tmp_path, "web").restarts == 2 and _state(tmp_path, "web").state == "running", 30)
    assert "on request" in _state(tmp_path, "web").last_exit

"""Start the lake as a real process (python -m services.lake) on free ports, and read its root."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.devstack.ports import free_port
from services.lake.aggregates import Aggregates
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from tests.support.credentials import service_env
from tests.support.projects import example_spec, publish_spec
from tests.support.waiting import wait_until


@dataclass
class LakeProcess:
    proc: subprocess.Popen
    http: str
    grpc: str
    log_path: Path

    def ready(self) -> bool:
        return httpx.get(f"{self.http}/readyz", timeout=2).status_code == 200

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(60)
        if status != 0:  # show why in the test report (librdkafka's own lines start with %)
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if not x.startswith("%")]
            print("\n".join(lines[-60:]))
        return status


def start_lake(
    bootstrap: str, root: Path, group: str, home: Path, log_level: str = "WARNING", **extra: str
) -> LakeProcess:
    publish_spec(bootstrap, example_spec("digits"))  # the default project (the trainer publishes it in a stack)
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
        "FLYWHEEL_LAKE_ROOT": f"file://{root}",
        "FLYWHEEL_LAKE_HTTP_PORT": str(http_port),
        "FLYWHEEL_LAKE_GRPC_PORT": str(grpc_port),
        "FLYWHEEL_LAKE_GROUP": group,
        **service_env("lake"),
        "FLYWHEEL_LOG_LEVEL": os.environ.get("FLYWHEEL_TEST_LAKE_LOG_LEVEL", log_level),
        **{f"FLYWHEEL_LAKE_{k.upper()}": v for k, v in extra.items()},
    }
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "lake.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "services.lake"], env=env, stdout=log, stderr=subprocess.STDOUT)
    lake = LakeProcess(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", home / "lake.log")
    wait_until(lake.ready, 60, proc=proc, message="lake /readyz")
    return lake


def count_rows(root: Path, prefix: str) -> tuple[int, int]:
    """(rows in the files, distinct events) of this run's events (example ids starting with prefix)."""
    store = LakeStore(f"file://{root}")
    agg = Aggregates(store, lambda: Manifest.load(store), threading.RLock())
    like = {"p": f"{prefix}%"}
    with agg.connect() as (con, _):
        raw = sum(
            con.execute(f"SELECT count(*) FROM {v} WHERE example_id LIKE $p", like).fetchall()[0][0]
            for v in ("labels_all", "predictions_all")
        )
        distinct = sum(
            con.execute(f"SELECT count(*) FROM {v} WHERE example_id LIKE $p", like).fetchall()[0][0]
            for v in ("labels", "predictions")
        )
    return int(raw), int(distinct)


def wait_rows(root: Path, prefix: str, at_least: int, lake: LakeProcess, timeout_s: float = 120) -> None:
    """Wait until the lake holds at least this many of the run's events; on a timeout, print what
    the lake was doing (rows, its counters and consumer lag, its threads' stacks, its log's tail)."""
    try:
        # Each poll is a DuckDB scan of the lake: poll gently, the lake shares the CPUs.
        wait_until(
            lambda: count_rows(root, prefix)[1] >= at_least,
            timeout_s,
            proc=lake.proc,
            interval_s=0.3,
            message=f"{at_least} rows",
        )
    except AssertionError:
        print(diagnostics(lake, root, prefix))
        raise


def diagnostics(lake: LakeProcess, root: Path, prefix: str) -> str:
    """A stalled lake's state, for a failing test's report; every part is best-effort."""
    parts = []
    try:
        parts.append(f"rows of {prefix} (in files, distinct): {count_rows(root, prefix)}")
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        parts.append(f"rows: unreadable ({exc!r})")
    try:
        ready = httpx.get(f"{lake.http}/readyz", timeout=5)
        parts.append(f"/readyz {ready.status_code}: {ready.text}")
        wanted = ("flywheel_lake_rows_", "flywheel_lake_files_", "flywheel_consumer_lag", "flywheel_events_")
        text = httpx.get(f"{lake.http}/metrics", timeout=5).text
        parts.extend(line for line in text.splitlines() if line.startswith(wanted))
    except Exception as exc:  # noqa: BLE001
        parts.append(f"/metrics: unreachable ({exc!r})")
    if lake.proc.poll() is None:  # the lake dumps every thread's stack into its log on SIGUSR1
        size = lake.log_path.stat().st_size
        lake.proc.send_signal(signal.SIGUSR1)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: lake.log_path.stat().st_size > size, 5, message="thread dump")
    lines = [x for x in lake.log_path.read_text(errors="replace").splitlines() if not x.startswith("%")]
    parts.append(f"--- last {min(len(lines), 120)} lines of {lake.log_path} ---")
    parts.extend(lines[-120:])
    return "\n".join(parts)


def metric(lake: LakeProcess, name: str) -> float:
    """Sum of a Prometheus metric's samples (all labels) on the lake's /metrics."""
    text = httpx.get(f"{lake.http}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

"""The perf_analyzer bench's pure parts (bench/modelserver/perf.py): no servers, no perf_analyzer.

The CSV and stdout samples are perf_analyzer 2.48's own output, from a `--quick` run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import asdict

import pytest

from bench.modelserver.perf import (
    Pinner,
    Point,
    failure_reason,
    keep_best,
    merge_runs,
    parse_cpus,
    parse_csv,
    parse_stdout,
    proc_cpu_seconds,
    summarize,
    tree,
)

HEADER = (
    "{load},Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
)
RATE_CSV = HEADER.format(load="Request Rate") + "500,436.031,8,12120,959,0,319,0,1,9429,32104,41707,51802\n"
CONCURRENCY_CSV = HEADER.format(load="Concurrency") + "16,2210.5,8,5000,900,0,319,0,1,7000,9000,9500,12500\n"
STDOUT_ERRORS = """Request Rate: 500 inference requests per seconds
  Client:
    Request count: 1596
    Avg send request rate: 440.35 infer/sec
    [WARNING] Perf Analyzer was not able to keep up with the desired request rate. 16.04% of the requests were delayed.
    Throughput: 436.03 infer/sec
    p99 latency: 51802 usec
  Server:
    Successful request count: 1599

Thread [1] had error: deadline passed while queued; not computed

Thread [2] had error: deadline passed while queued; not computed
"""
STDOUT_CLEAN = """Request Rate: 500 inference requests per seconds
  Client:
    Request count: 1500
    Throughput: 499.9 infer/sec
  Server:
    Successful request count: 1520
"""


def test_parse_csv_reads_a_request_rate_row_in_milliseconds() -> None:
    assert parse_csv(RATE_CSV) == {"load": 500.0, "throughput": 436.0, "p50_ms": 9.429, "p99_ms": 51.802}


def test_parse_csv_reads_a_concurrency_row() -> None:
    row = parse_csv(CONCURRENCY_CSV)
    assert (row["load"], row["throughput"], row["p99_ms"]) == (16.0, 2210.5, 12.5)


def test_parse_csv_without_a_row_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_csv(RATE_CSV.splitlines()[0] + "\n")


def test_parse_stdout_counts_failed_threads_and_late_sends() -> None:
    out = parse_stdout(STDOUT_ERRORS)
    assert out == {"errors": 2, "error_sample": "deadline passed while queued; not computed", "delayed_pct": 16.04}
    # The server's successful count spans more than the client's windows: no error is read from it.
    assert parse_stdout(STDOUT_CLEAN) == {"errors": 0, "error_sample": "", "delayed_pct": None}


def test_failure_reason_names_the_error_line() -> None:
    stdout = "Request Rate: 1000\n\nFailed to maintain requested inference load. Worker thread(s) failed.\n"
    stdout += "Thread [9] had error: deadline passed while queued; not computed\n"
    assert failure_reason(stdout, "", 99) == "exit 99: Thread [9] had error: deadline passed while queued; not computed"
    assert failure_reason("", "", 1) == "exit 1"


def _pt(setting: str, p99: float | None, thr: float, *, value: int = 1000, load: str = "rate", **kw) -> Point:
    return Point("triton", setting, "mlp", "grpc", load, value, throughput=thr, p50_ms=1.0, p99_ms=p99, **kw)


def test_keep_best_prefers_clean_then_lowest_p99_and_names_setting_and_pass() -> None:
    points = [
        _pt("queue delay 0 us", 9.0, 990, pass_no=1),
        _pt("queue delay 100 us", 4.0, 995, pass_no=2),
        _pt("queue delay 1000 us", 2.0, 999, errors=3, pass_no=1),  # lowest p99, but requests failed
        _pt("queue delay 5000 us", None, 0, failed="exit 99", errors=1, pass_no=1),
    ]
    [best] = keep_best(points, passes=2)
    assert (best.setting, best.p99_ms) == ("queue delay 100 us", 4.0)
    assert best.kept_from == "queue delay 100 us, pass 2 of 2"


def test_keep_best_closed_loop_keeps_the_highest_throughput() -> None:
    points = [
        _pt("queue delay 0 us", 5.0, 1500, load="concurrency", value=16),
        _pt("queue delay 5000 us", 9.0, 2100, load="concurrency", value=16),
    ]
    [best] = keep_best(points, passes=1)
    assert best.throughput == 2100 and best.kept_from == "queue delay 5000 us"


def test_keep_best_keeps_points_apart() -> None:
    points = [_pt("a", 5.0, 500, value=500), _pt("a", 5.0, 1000, value=1000), _pt("a", 5.0, 1000, load="concurrency")]
    assert sorted((p.load, p.value) for p in keep_best(points, 1)) == [
        ("concurrency", 1000),
        ("rate", 500),
        ("rate", 1000),
    ]


def test_goodput_is_the_highest_clean_rate_within_the_slo_actually_achieved() -> None:
    kept = [
        _pt("q0", 3.0, 500, value=500),
        _pt("q0", 12.0, 1000, value=1000),
        _pt("q100", 15.0, 1200, value=2000),  # within the SLO but only 60 % of the offered rate went through
        _pt("q0", 18.0, 3990, value=4000, errors=1),  # errors: not goodput
        _pt("q100", 40.0, 2500, value=16, load="concurrency"),
    ]
    [row] = summarize(kept, slo_ms=20)
    assert row["goodput_at_slo"] == 1000
    assert row["max_throughput"] == 3990
    assert row["errors"] == 1
    assert row["settings_won"] == {"q0": 3, "q100": 2}
    assert summarize(kept, slo_ms=10)[0]["goodput_at_slo"] == 500


def test_goodput_is_zero_when_no_rate_meets_the_slo() -> None:
    [row] = summarize([_pt("", 25.0, 500, value=500), _pt("", None, 0, value=1000, failed="exit 99", errors=1)], 20)
    assert row["goodput_at_slo"] == 0 and row["max_throughput"] == 500 and row["settings_won"] == {}


def _run(time: str, points: list[Point], load: float) -> dict:
    return {
        "time": time,
        "machine": {"load_average_at_start": [load, load, load]},
        "slo_ms": 20.0,
        "passes": 1,
        "wall_s": 10.0,
        "strays": 1,
        "skipped": {},
        "points": [asdict(p) for p in points],
        "all_points": [asdict(p) for p in points],
    }


def test_merge_runs_keeps_the_better_pass_per_point_and_says_where_each_came_from() -> None:
    first = _run(
        "T1", [_pt("q0", 30.0, 990, value=1000), _pt("q0", None, 0, value=2000, failed="exit 99", errors=1)], 0.5
    )
    second = _run("T2", [_pt("q0", 4.0, 995, value=1000), _pt("q0", 25.0, 1990, value=2000)], 0.7)
    merged = merge_runs([first, second])
    kept = {p["value"]: p for p in merged["points"]}
    assert kept[1000]["p99_ms"] == 4.0 and kept[1000]["kept_from"] == "q0, pass 2 of 2"
    assert kept[2000]["p99_ms"] == 25.0 and not kept[2000]["failed"]  # a failed run never beats a clean one
    assert merged["passes"] == 2 and merged["strays"] == 2 and merged["wall_s"] == 20.0
    assert [r["time"] for r in merged["merged_from"]] == ["T1", "T2"]
    assert merged["summary"][0]["goodput_at_slo"] == 1000 and len(merged["all_points"]) == 4
    with pytest.raises(ValueError):
        merge_runs([])


def test_proc_cpu_seconds_sums_user_and_system_past_an_odd_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
    line = "4242 (tritonserver (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 9 0 1 2 3\n"
    assert proc_cpu_seconds(line, ticks=100) == pytest.approx(3.5)


def test_parse_cpus() -> None:
    assert parse_cpus("0") == {0}
    assert parse_cpus("0,1") == {0, 1}
    assert parse_cpus("0-2,5") == {0, 1, 2, 5}
    with pytest.raises(ValueError):
        parse_cpus(" , ")


def test_pinner_moves_every_stray_task_of_the_tree_once() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell a stray from a pinned task")
    spawn = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);"
    spawn += " print(c.pid, flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert tree(child.pid) == sorted([child.pid, grandchild])
        assert os.getpid() not in tree(child.pid)
        for pid in (child.pid, grandchild):
            os.sched_setaffinity(pid, set(cpus))  # as a task that set its own affinity would be
        pinner = Pinner(child.pid, {cpus[0]})
        pinner.sweep()
        assert pinner.strays == 2  # one thread each
        assert os.sched_getaffinity(child.pid) == os.sched_getaffinity(grandchild) == {cpus[0]}
        pinner.sweep()
        assert pinner.strays == 2  # once on its cores, nothing more to move
        assert pinner.cpu_seconds() >= 0
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()

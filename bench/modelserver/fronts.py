"""The model server's two gRPC fronts side by side: compiled (Rust HTTP/2) vs grpc.aio, same run, interleaved.

    python -m bench.modelserver.fronts [--model mlp] [--rounds 3] [--window-ms 1000] [--concurrency 16]

Both servers start at once (bench/modelserver/systems.py's start_flywheel, FLYWHEEL_MODELSERVER_GRPC_FRONT
set for each), every thread of each pinned to CPU 0; perf_analyzer (gRPC, async, closed loop at
`--concurrency`, three windows of `--window-ms`) runs under `taskset -c 1` against one server, then the
other, `--rounds` times, so load from the rest of a shared machine falls on both alike. Per run:
requests/s and the server's CPU seconds per 1,000 requests (utime+stime of its process from /proc
around the run). Prints a Markdown table; `--out` writes it too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.modelserver.models import write_repositories
from bench.modelserver.perf import PERF_ANALYZER, pa_env, parse_csv, runnable
from bench.modelserver.systems import Endpoint, start_flywheel

FRONTS = ("compiled", "aio")


def pin(pid: int, cpu: int) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # a thread that ended meanwhile
            pass


def cpu_seconds(pid: int, thread: str = "") -> float:
    """utime+stime of the process, or of its threads named `thread` (the compiled front's is "grpcfront")."""
    stats = [Path(f"/proc/{pid}/stat")]
    if thread:
        tasks = Path(f"/proc/{pid}/task")
        stats = [t / "stat" for t in tasks.iterdir() if (t / "comm").read_text().strip() == thread]
    total = 0
    for stat in stats:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_point(endpoint: Endpoint, model: str, args: argparse.Namespace, work: Path) -> tuple[float, float, float]:
    """(requests/s, server CPU s per 1k requests, of which the compiled front's thread) of one perf_analyzer run."""
    report = work / f"pa-{time.monotonic_ns()}.csv"
    cmd = ["taskset", "-c", str(args.client_cpu), str(PERF_ANALYZER), "-m", model, "-u", endpoint.grpc, "-i", "grpc"]
    cmd += ["--measurement-mode", "time_windows", "-p", str(args.window_ms), "--max-trials", "3"]
    cmd += ["--stability-percentage", "1000", "-f", str(report), "--concurrency-range", str(args.concurrency)]
    cmd += ["--async", "-b", "1", "--input-data", "random", "-H", f"authorization:Bearer {endpoint.token}"]
    pin(endpoint.pid, args.server_cpu)
    before, front_before, t0 = cpu_seconds(endpoint.pid), cpu_seconds(endpoint.pid, "grpcfront"), time.monotonic()
    out = subprocess.run(cmd, env=pa_env(), capture_output=True, text=True, timeout=60)
    wall, cpu = time.monotonic() - t0, cpu_seconds(endpoint.pid) - before
    front = cpu_seconds(endpoint.pid, "grpcfront") - front_before
    if out.returncode != 0 or not report.exists():
        raise SystemExit(f"perf_analyzer failed ({out.returncode}): {(out.stderr or out.stdout)[-800:]}")
    throughput = parse_csv(report.read_text())["throughput"]
    return throughput, 1000 * cpu / (throughput * wall), 1000 * front / (throughput * wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    problem = runnable()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        write_repositories(work / "repo", "cpu")
        endpoints = {}
        for front in FRONTS:
            os.environ["FLYWHEEL_MODELSERVER_GRPC_FRONT"] = front
            (work / front).mkdir()  # each server's own log
            endpoints[front] = stack.enter_context(start_flywheel(work / "repo" / "flywheel", work / front, "adaptive"))
        results: dict[str, list[tuple[float, float, float]]] = {f: [] for f in FRONTS}
        for _ in range(args.rounds):
            for front in FRONTS:
                results[front].append(run_point(endpoints[front], args.model, args, work))
    lines = [
        f"model {args.model}, gRPC, perf_analyzer async concurrency {args.concurrency}, "
        f"{args.rounds} interleaved rounds of 3 windows of {args.window_ms} ms; server on CPU {args.server_cpu}, "
        f"client on CPU {args.client_cpu}",
        "",
        "| front | requests/s (median) | per round | server CPU s / 1k requests (median) | of which Rust thread |",
        "|---|---|---|---|---|",
    ]
    for front, rows in results.items():
        rates = [r for r, _, _ in rows]
        cpus = [c for _, c, _ in rows]
        rust = statistics.median(t for _, _, t in rows)
        per_round = ", ".join(f"{r:,.0f}" for r in rates)
        lines.append(
            f"| {front} | {statistics.median(rates):,.0f} | {per_round} | {statistics.median(cpus):.3f} | {rust:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

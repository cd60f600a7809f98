"""Model-server benchmark with NVIDIA's own load generator, perf_analyzer, on pinned cores.

    python -m bench.modelserver [--quick] [--systems flywheel,triton,torchserve] [--models mlp,cnn]
        [--protocols grpc,http,http-json] [--rates 250,500,1000,2000,4000,6000,8000] [--concurrency 16]
        [--server-cpus 0] [--client-cpus 1] [--passes 2] [--slo-ms 20]

One server at a time, started exactly as bench/modelserver/systems.py starts it, with its whole
process tree on `--server-cpus` (inherited from the thread that starts it, then kept there by a
watcher that re-pins every thread and child it finds elsewhere, counted as strays) and
perf_analyzer (.tools/perf_analyzer, `make tools`) under `taskset -c <client-cpus>`, so the load
generator no longer competes with the server for its core.

Every point is one perf_analyzer run: open-loop Poisson at each rate (`--request-rate-range R
--request-distribution poisson`) and one closed-loop point (`--concurrency-range 16`), three time
windows of `--window-ms` each. Protocols: gRPC, HTTP with binary tensors (perf_analyzer's
default), HTTP with JSON tensors; TorchServe only over its own HTTP API (raw bytes). A run that
fails (non-zero exit, e.g. a server error) is that point's "errors", not the bench's crash.

Per point: p50, p99, achieved throughput, errors, and the server tree's CPU seconds per 1,000
requests (utime+stime from /proc, before/after the run, over throughput × run time, so a slight
underestimate: perf_analyzer's start-up sends nothing). Per system × model × protocol: the highest
throughput seen and the goodput: the highest offered rate whose p99 ≤ SLO with no errors and at
least 90 % of it achieved. Triton is swept over max_queue_delay_microseconds {0, 100, 1000, 5000}
and TorchServe over maxBatchDelay {0, 1, 5} ms; per point the best setting is kept and named.
`--passes 2` runs the matrix twice, systems in reversed order the second time, and keeps the
better pass per point (interference on a shared box only ever slows a run down); `--merge A.json
B.json` does the same with runs made separately (a pass each), writing nothing but the merge.

The full matrix (8 server configurations, 2 passes) takes about an hour; `--quick` under 90 s.
Writes bench/results/modelserver_perf.json and .md. What perf_analyzer cannot do (the in-process
onnxruntime ceiling, a Python client's view) stays in `python -m bench.modelserver.loadgen_bench`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.modelserver.models import MODELS, write_repositories, write_triton_variant
from bench.modelserver.systems import (
    ROOT,
    TOOLS,
    Endpoint,
    SystemUnavailable,
    start_flywheel,
    start_torchserve,
    start_triton,
)
from bench.report import stamp, write_json

PERF_ANALYZER = TOOLS / "perf_analyzer" / "perf_analyzer"
RESULTS = ROOT / "bench" / "results" / "modelserver_perf.json"
SYSTEMS = ["flywheel", "triton", "torchserve"]  # flywheel-nobatch on request
PROTOCOLS = ["grpc", "http", "http-json"]
# Up to past every system's capacity on one core of this machine class (~6–9k/s for the MLP): a ladder
# that stops below capacity cannot tell goodputs apart.
RATES = [250, 500, 1000, 2000, 4000, 6000, 8000]
TRITON_DELAYS_US = [0, 100, 1000, 5000]
TORCHSERVE_DELAYS_MS = [0, 1, 5]
TORCHSERVE_THREADS = 32
GOODPUT_MIN_ACHIEVED = 0.9  # an offered rate counts only if the client really sent (and got back) ≥ 90 % of it

# perf_analyzer flags per protocol. HTTP's default tensor format is binary; JSON is the other one it allows.
PROTOCOL_ARGS = {
    "grpc": ["-i", "grpc"],
    "http": ["-i", "http", "--input-tensor-format", "binary", "--output-tensor-format", "binary"],
    "http-json": ["-i", "http", "--input-tensor-format", "json", "--output-tensor-format", "json"],
    "torchserve": ["-i", "http", "--service-kind", "torchserve"],
}


# ---------------------------------------------------------------- pure parts (tests/modelserver/test_bench_perf.py)


@dataclass(frozen=True)
class Load:
    kind: str  # "rate" (open-loop Poisson, requests/s) | "concurrency" (closed loop, requests in flight)
    value: int

    def label(self) -> str:
        return f"{self.value}/s" if self.kind == "rate" else f"c{self.value}"

    def args(self) -> list[str]:
        if self.kind == "rate":
            return ["--request-rate-range", str(self.value), "--request-distribution", "poisson"]
        return ["--concurrency-range", str(self.value)]


@dataclass
class Point:
    system: str
    setting: str  # the batching knob ("queue delay 100 us"), "" where there is none
    model: str
    protocol: str
    load: str  # "rate" | "concurrency"
    value: int
    throughput: float | None = None  # inferences/s perf_analyzer measured
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0  # worker threads that saw a failed request (a lower bound); a failed run counts ≥ 1
    error_sample: str = ""  # the first error perf_analyzer printed
    failed: str = ""
    delayed_pct: float | None = None  # open loop: requests perf_analyzer sent late (client behind)
    cpu_s_per_1k: float | None = None  # server tree utime+stime per 1,000 requests
    wall_s: float = 0.0
    pass_no: int = 1
    kept_from: str = ""  # where the kept point came from: "setting X, pass N of M"

    @property
    def ok(self) -> bool:
        return not self.failed and self.errors == 0 and self.p99_ms is not None


def _us_to_ms(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    return round(float(value) / 1000, 3)


def parse_csv(text: str) -> dict[str, Any]:
    """perf_analyzer's `-f` report (latencies in µs) → throughput, p50_ms, p99_ms, load; first data row."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("perf_analyzer wrote no result row")
    row = {k.strip(): (v or "").strip() for k, v in rows[0].items() if k}
    load = row.get("Request Rate") or row.get("Concurrency")
    return {
        "load": float(load) if load else None,
        "throughput": round(float(row["Inferences/Second"]), 1),
        "p50_ms": _us_to_ms(row.get("p50 latency")),
        "p99_ms": _us_to_ms(row.get("p99 latency")),
    }


def parse_stdout(text: str) -> dict[str, Any]:
    """Errors and client lag from perf_analyzer's report.

    perf_analyzer keeps no count of failed requests: each worker thread that saw one prints
    "Thread [i] had error: …" (once) when the run ends, so `errors` is a lower bound, and any
    error disqualifies the point from goodput. `delayed_pct`: open-loop sends that left late.
    """
    out: dict[str, Any] = {"errors": 0, "error_sample": "", "delayed_pct": None}
    errors = re.findall(r"Thread \[\d+\] had error: *(.*)", text)
    if errors:
        out["errors"], out["error_sample"] = len(errors), errors[0].strip()[:200]
    late = re.search(r"([\d.]+)% of the requests were delayed", text)
    if late:
        out["delayed_pct"] = float(late.group(1))
    return out


def failure_reason(stdout: str, stderr: str, rc: int) -> str:
    """One line saying why a perf_analyzer run failed: its last error-looking line, else the exit status."""
    lines = [ln.strip() for ln in (stdout + "\n" + stderr).splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.search(r"error|fail|unable|refused|unavailable|denied", line, re.I):
            return f"exit {rc}: {line[:240]}"
    return f"exit {rc}: {lines[-1][:240]}" if lines else f"exit {rc}"


def _rank(point: Point) -> tuple:
    """Bigger is better. Open loop: clean first, then the lowest p99; closed loop: clean, then throughput."""
    p99 = point.p99_ms if point.p99_ms is not None else math.inf
    thr = point.throughput or 0.0
    if point.load == "rate":
        return (point.ok, -p99, thr)
    return (point.ok, thr, -p99)


def keep_best(points: list[Point], passes: int) -> list[Point]:
    """One point per system × model × protocol × load: the best over settings and passes, noted in kept_from."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault((p.system, p.model, p.protocol, p.load, p.value), []).append(p)
    kept = []
    for group in groups.values():
        best = max(group, key=_rank)
        chosen = Point(**{**asdict(best)})
        where = [f"pass {best.pass_no} of {passes}"] if passes > 1 else []
        if best.setting:
            where.insert(0, best.setting)
        chosen.kept_from = ", ".join(where)
        kept.append(chosen)
    return kept


def summarize(kept: list[Point], slo_ms: float) -> list[dict[str, Any]]:
    """Per system × model × protocol: highest throughput, goodput at the SLO, which settings won."""
    groups: dict[tuple[str, str, str], list[Point]] = {}
    for p in kept:
        groups.setdefault((p.system, p.model, p.protocol), []).append(p)
    rows = []
    for (system, model, protocol), group in groups.items():
        meeting = [
            p.value
            for p in group
            if p.load == "rate"
            and p.ok
            and p.p99_ms is not None
            and p.p99_ms <= slo_ms
            and (p.throughput or 0.0) >= GOODPUT_MIN_ACHIEVED * p.value
        ]
        throughputs = [p.throughput for p in group if p.throughput is not None and not p.failed]
        winners: dict[str, int] = {}
        for p in group:
            if p.setting:
                winners[p.setting] = winners.get(p.setting, 0) + 1
        rows.append(
            {
                "system": system,
                "model": model,
                "protocol": protocol,
                "max_throughput": max(throughputs) if throughputs else 0.0,
                "goodput_at_slo": max(meeting) if meeting else 0,
                "errors": sum(p.errors for p in group),
                "settings_won": winners,  # setting → how many of this row's points it won
            }
        )
    return rows


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Earlier runs' results (their JSON) as the passes of one: run i's points become pass i, the best
    per point is kept as in a run of several passes. The machine and settings are the first run's; each
    run's time and load average are listed, so the merged table says where its numbers came from."""
    if not runs:
        raise ValueError("nothing to merge")
    points: list[Point] = []
    for i, run in enumerate(runs, 1):
        for raw in run.get("all_points") or run["points"]:
            p = Point(**{**raw, "kept_from": ""})
            p.pass_no = i
            points.append(p)
    first = runs[0]
    kept = keep_best(points, len(runs))
    return {
        **first,
        "time": " + ".join(r["time"] for r in runs),
        "passes": len(runs),
        "merged_from": [
            {
                "time": r["time"],
                "load_average_at_start": r["machine"].get("load_average_at_start"),
                "passes": r.get("passes"),
                "wall_s": r.get("wall_s"),
            }
            for r in runs
        ],
        "strays": sum(r.get("strays", 0) for r in runs),
        "skipped": {k: v for r in runs for k, v in (r.get("skipped") or {}).items()},
        "wall_s": round(sum(r.get("wall_s", 0.0) for r in runs), 1),
        "summary": summarize(kept, first["slo_ms"]),
        "points": [asdict(p) for p in kept],
        "all_points": [asdict(p) for p in points],
    }


def proc_cpu_seconds(stat_line: str, ticks: int) -> float:
    """utime+stime+cutime+cstime of one /proc/<pid>/stat line (the name may hold spaces and parentheses)."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime..cstime are fields 14..17.
    return sum(int(fields[i]) for i in range(11, 15)) / ticks


def parse_cpus(text: str) -> set[int]:
    """'0', '0,1', '0-3,6' → CPU ids."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return cpus


# ---------------------------------------------------------------- the server's process tree on its cores


def _stat(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None


class ProcessTable:
    """Who descends from whom, read from /proc/<pid>/stat once per process (a full re-read costs ~10 ms)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[int, int, int]] = {}  # pid → (ppid, pgrp, session)

    def tree(self, root: int) -> list[int]:
        """root, its descendants and every process in its process group or session (systems.py gives each
        server its own session, so workers re-parented out of the tree still count)."""
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in self._known.keys() - live:
            del self._known[pid]
        for pid in live - self._known.keys():
            line = _stat(pid)
            if line is not None:
                fields = line[line.rindex(")") + 2 :].split()
                self._known[pid] = (int(fields[1]), int(fields[2]), int(fields[3]))
        found = {root} | {pid for pid, (_, pgrp, sid) in self._known.items() if root in (pgrp, sid)}
        frontier = list(found)
        while frontier:
            current = frontier.pop()
            for pid, (ppid, _, _) in self._known.items():
                if ppid == current and pid not in found:
                    found.add(pid)
                    frontier.append(pid)
        return sorted(p for p in found if p in self._known)


def tree(root: int) -> list[int]:
    return ProcessTable().tree(root)


class Pinner:
    """Keeps every thread of a process tree on `cpus`; counts the threads it had to move (strays)."""

    def __init__(self, root: int, cpus: set[int], interval_s: float = 0.25) -> None:
        self.root, self.cpus, self.interval_s = root, cpus, interval_s
        self.processes = ProcessTable()
        self.strays = 0
        self.stray_names: dict[str, int] = {}
        self.tasks_seen: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pinner", daemon=True)

    def sweep(self) -> None:
        for pid in self.processes.tree(self.root):
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                self.tasks_seen.add((pid, tid))
                try:
                    if os.sched_getaffinity(tid) != self.cpus:
                        os.sched_setaffinity(tid, self.cpus)
                        self.strays += 1
                        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                        self.stray_names[name] = self.stray_names.get(name, 0) + 1
                except OSError:  # the thread ended between listing and pinning
                    pass

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        return sum(proc_cpu_seconds(line, ticks) for pid in self.processes.tree(self.root) if (line := _stat(pid)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()

    def __enter__(self) -> Pinner:
        self.sweep()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pin_self(cpus: set[int]) -> None:
    """Every thread of this process (torch's, from the export) onto `cpus`."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


@contextmanager
def started_on(
    start: Callable[[], AbstractContextManager[Endpoint]], server: set[int], client: set[int]
) -> Iterator[Endpoint]:
    """Start a server from this thread while it sits on the server's cores, so every task it spawns inherits them."""
    stack = ExitStack()
    os.sched_setaffinity(0, server)  # this thread only: the child Popen forks from it
    try:
        endpoint = stack.enter_context(start())
    finally:
        os.sched_setaffinity(0, client)
    with stack:
        yield endpoint


# ---------------------------------------------------------------- one perf_analyzer run


def pa_env() -> dict[str, str]:
    libs = PERF_ANALYZER.parent / "lib"
    return {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def runnable() -> str | None:
    """None when perf_analyzer runs here, else why not."""
    if not PERF_ANALYZER.exists():
        return f"{PERF_ANALYZER} is missing: run `make tools`"
    try:
        out = subprocess.run(
            [str(PERF_ANALYZER), "--version"], env=pa_env(), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf_analyzer cannot start: {exc}"
    if out.returncode != 0:
        return f"perf_analyzer cannot run here: {(out.stderr or out.stdout).strip()[-400:]}"
    return None


@dataclass
class Run:
    """What every perf_analyzer call of this bench shares."""

    client_cpus: str
    window_ms: int
    trials: int
    max_threads: int | None
    workdir: Path
    log: Path
    torchserve_inputs: dict[str, Path] = field(default_factory=dict)  # model → perf_analyzer --input-data JSON


def measure(run: Run, endpoint: Endpoint, pinner: Pinner, model: str, protocol: str, load: Load, point: Point) -> None:
    """One perf_analyzer run into `point`; a failure (non-zero exit, timeout) lands in point.failed."""
    report = run.workdir / f"pa-{point.system}-{model}-{protocol}-{load.kind}{load.value}-{time.monotonic_ns()}.csv"
    kind = "torchserve" if endpoint.protocol == "torchserve" else protocol
    target = endpoint.grpc if protocol == "grpc" else endpoint.http
    cmd = ["taskset", "-c", run.client_cpus, str(PERF_ANALYZER), "-m", model, "-u", target, *PROTOCOL_ARGS[kind]]
    cmd += ["--measurement-mode", "time_windows", "-p", str(run.window_ms), "--max-trials", str(run.trials)]
    # Three windows, always "stable": the point's time stays bounded, the report merges the windows.
    cmd += ["--stability-percentage", "1000", "-f", str(report), *load.args()]
    if kind == "torchserve":
        # perf_analyzer's TorchServe client has no async calls: enough synchronous threads stand in for them.
        threads = run.max_threads or TORCHSERVE_THREADS
        cmd += ["--input-data", str(run.torchserve_inputs[model]), "--max-threads", str(threads)]
    else:
        # Async: requests leave on the Poisson schedule whatever the answers do (perf_analyzer's default is sync).
        cmd += ["--async", "-b", "1", "--input-data", "random"]
        if run.max_threads:
            cmd += ["--max-threads", str(run.max_threads)]
    if endpoint.token:  # -H goes out as gRPC metadata too: Flywheel admits the operator's credential
        cmd += ["-H", f"authorization:Bearer {endpoint.token}"]
    before, t0 = pinner.cpu_seconds(), time.monotonic()
    timeout = run.trials * run.window_ms / 1000 * 2 + 30
    try:
        out = subprocess.run(cmd, env=pa_env(), capture_output=True, text=True, timeout=timeout)
        stdout, stderr, rc = out.stdout, out.stderr, out.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr, rc = f"perf_analyzer still running after {timeout:.0f}s", 124
    point.wall_s = round(time.monotonic() - t0, 2)
    cpu = pinner.cpu_seconds() - before
    with run.log.open("a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n{stdout}\n{stderr}\n")
    point.__dict__.update(parse_stdout(stdout))
    if rc != 0 or not report.exists():
        point.failed = failure_reason(stdout, stderr, rc)
        point.errors = max(point.errors, 1)
        return
    try:
        parsed = parse_csv(report.read_text())
    except (ValueError, KeyError) as exc:
        point.failed, point.errors = f"unreadable report: {exc}", max(point.errors, 1)
        return
    point.throughput, point.p50_ms, point.p99_ms = parsed["throughput"], parsed["p50_ms"], parsed["p99_ms"]
    if point.throughput:
        point.cpu_s_per_1k = round(1000 * cpu / (point.throughput * point.wall_s), 3)


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Target:
    """One server configuration: a system and, where it has one, a batching setting."""

    system: str
    setting: str
    start: Callable[[], AbstractContextManager[Endpoint]]
    protocols: tuple[str, ...]


def targets(args: argparse.Namespace, work: Path, logs: Path) -> list[Target]:
    out: list[Target] = []
    logs.mkdir(parents=True, exist_ok=True)
    web = tuple(p for p in args.protocols if p != "torchserve")
    for system in args.systems:
        if system in ("flywheel", "flywheel-nobatch"):
            mode = "adaptive" if system == "flywheel" else "off"
            out.append(Target(system, "", lambda m=mode: start_flywheel(work / "flywheel", logs, m), web))
        elif system == "triton":
            for delay in args.triton_delays:
                repo = write_triton_variant(work, args.device, delay)
                out.append(Target(system, f"queue delay {delay} us", lambda r=repo: start_triton(r, logs), web))
        elif system == "torchserve":
            # TorchServe speaks its own HTTP API only: one "protocol", raw float32 bodies.
            shapes = {n: s.shape for n, s in MODELS.items()}
            for delay in args.torchserve_delays:
                tlogs = logs / f"torchserve-{delay}ms"
                tlogs.mkdir(parents=True, exist_ok=True)

                def start(
                    d: int = delay, w: Path = tlogs, s: dict[str, tuple[int, ...]] = shapes
                ) -> AbstractContextManager[Endpoint]:
                    return start_torchserve(work / "torchserve", w, s, args.device, d)

                out.append(Target(system, f"max batch delay {delay} ms", start, ("torchserve",)))
        else:
            raise SystemExit(f"unknown system {system!r}: one of {[*SYSTEMS, 'flywheel-nobatch']}")
    return out


def torchserve_inputs(work: Path) -> dict[str, Path]:
    """perf_analyzer's TorchServe mode uploads a file named in a JSON: one zero tensor per model."""
    import numpy as np

    files = {}
    for name, spec in MODELS.items():
        raw = work / f"{name}-input.bin"
        raw.write_bytes(np.zeros(spec.shape, np.float32).tobytes())
        files[name] = work / f"{name}-input.json"
        files[name].write_text(json.dumps({"data": [{"TORCHSERVE_INPUT": [str(raw)]}]}))
    return files


def machine_facts(args: argparse.Namespace, load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    version = subprocess.run([str(PERF_ANALYZER), "--version"], env=pa_env(), capture_output=True, text=True)
    said = [ln.strip() for ln in (version.stdout + version.stderr).splitlines() if "Version" in ln]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "pinning": {
            "server_cpus": args.server_cpus,
            "client_cpus": args.client_cpus,
            "how": "server started from a thread on its CPUs (tree inherits), watcher re-pins strays every 0.25 s; "
            "perf_analyzer under taskset",
        },
        "perf_analyzer": said[-1] if said else "perf_analyzer (version unknown)",
        "note": "Pinning keeps perf_analyzer off the server's cores, not the machine's other processes: "
        "on a shared machine, compare systems within one run",
        "device": args.device,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


POINT_COLUMNS = ("system", "model", "protocol", "load", "kept", "thr/s", "p50 ms", "p99 ms", "errors", "cpu s/1k")
SUMMARY_COLUMNS = ("system", "model", "protocol", "max thr/s", "goodput/s", "errors", "winning settings")


def point_cells(p: Point) -> list[str]:
    errors = f"fail ({p.failed[:64]})" if p.failed else str(p.errors)
    if p.errors and not p.failed:
        errors += f" ({p.error_sample[:40]})"
    load = Load(p.load, p.value).label()
    if p.delayed_pct:
        load += f" ({p.delayed_pct:g}% late)"
    return [p.system, p.model, p.protocol, load, p.kept_from or "-", _fmt(p.throughput), _fmt(p.p50_ms, 2),
            _fmt(p.p99_ms, 2), errors, _fmt(p.cpu_s_per_1k, 3)]  # fmt: skip


def summary_cells(r: dict[str, Any]) -> list[str]:
    won = ", ".join(f"{k} ×{v}" for k, v in sorted(r["settings_won"].items(), key=lambda kv: -kv[1])) or "-"
    return [r["system"], r["model"], r["protocol"], _fmt(r["max_throughput"]), str(r["goodput_at_slo"]),
            str(r["errors"]), won]  # fmt: skip


def _merged_note(result: dict[str, Any]) -> str:
    runs = result.get("merged_from")
    if not runs:
        return ""
    each = "; ".join(
        f"pass {i}: {r['time']} (load average {r['load_average_at_start']})" for i, r in enumerate(runs, 1)
    )
    return f"\nMerged from {len(runs)} runs (`--merge`), each one pass: {each}."


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]

    def table(cols: tuple[str, ...], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(lines)

    kept = [Point(**p) for p in result["points"]]
    quick = " — `--quick`: one model, one protocol, two rates; indicative only" if result["quick"] else ""
    pin = m["pinning"]
    return f"""# Model servers under perf_analyzer (`make bench-modelserver`)

{result["time"]}{quick}

Machine: {m["nproc"]} CPUs ({m["cpu_model"]}), load average at start {" / ".join(map(str, m["load_average_at_start"]))};
server on CPUs {pin["server_cpus"]}, perf_analyzer on CPUs {pin["client_cpus"]} ({pin["how"]});
{m["perf_analyzer"]}. {m["note"]}.
Each point: {result["trials"]} windows of {result["window_ms"]} ms; passes: {result["passes"]}; kept:
{result["kept"]}. Goodput: the highest offered rate whose p99 ≤ {result["slo_ms"]:g} ms, with no errors and
≥ {GOODPUT_MIN_ACHIEVED:.0%} of it achieved. cpu s/1k: the server tree's CPU seconds per 1,000 requests.
Stray threads re-pinned: {result["strays"]}. Skipped: {result["skipped"] or "none"}.{_merged_note(result)}

## Summary

{table(SUMMARY_COLUMNS, [summary_cells(r) for r in result["summary"]])}

## Points

{table(POINT_COLUMNS, [point_cells(p) for p in kept])}
"""


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    kept = [Point(**p) for p in result["points"]]
    points = Table(title=f"perf_analyzer points (kept: {result['kept']})")
    for col in POINT_COLUMNS:
        points.add_column(col, justify="left" if col in ("system", "model", "protocol", "load", "kept") else "right")
    for p in kept:
        points.add_row(*point_cells(p))
    console.print(points)
    summary = Table(title=f"Per system × model × protocol (goodput: highest rate with p99 ≤ {result['slo_ms']:g} ms)")
    for col in SUMMARY_COLUMNS:
        summary.add_column(col)
    for r in result["summary"]:
        summary.add_row(*summary_cells(r))
    console.print(summary)
    console.print(f"stray threads re-pinned: {result['strays']}; skipped: {result['skipped'] or 'none'}")


def publish(out: Path, result: dict[str, Any]) -> None:
    """The result as JSON at `out`, Markdown beside it, and the tables on the terminal."""
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown(result))
    render(result)
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['wall_s']} s of measuring)")


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.modelserver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--quick",
        action="store_true",
        help="mlp, gRPC, rates 500,1000, Flywheel + Triton (delay 1000 us), 1 pass (≤ 90 s)",
    )
    parser.add_argument("--systems", type=_csv, help=f"comma-separated, of {[*SYSTEMS, 'flywheel-nobatch']}")
    parser.add_argument("--models", type=_csv, help=f"of {list(MODELS)}")
    parser.add_argument("--protocols", type=_csv, help=f"of {PROTOCOLS} (TorchServe: its own HTTP API)")
    parser.add_argument("--rates", type=_csv_ints, help=f"open-loop Poisson rates/s (default {RATES})")
    parser.add_argument("--concurrency", type=_csv_ints, help="closed-loop points (default 16; 0 for none)")
    parser.add_argument(
        "--triton-delays", type=_csv_ints, help=f"max_queue_delay_microseconds (default {TRITON_DELAYS_US})"
    )
    parser.add_argument(
        "--torchserve-delays", type=_csv_ints, help=f"maxBatchDelay ms (default {TORCHSERVE_DELAYS_MS})"
    )
    parser.add_argument("--server-cpus", default="0", help="CPUs for the server's process tree: 0, 0,1, 0-3")
    parser.add_argument("--client-cpus", default="1", help="CPUs for perf_analyzer")
    parser.add_argument("--passes", type=int, help="whole-matrix passes, systems reversed each time (default 2)")
    parser.add_argument("--window-ms", type=int, help="perf_analyzer measurement window (default 2500, quick 1000)")
    parser.add_argument("--trials", type=int, default=3, help="windows per point (merged into one result)")
    parser.add_argument(
        "--max-threads",
        type=int,
        help=f"perf_analyzer worker threads (default: its own; TorchServe {TORCHSERVE_THREADS})",
    )
    parser.add_argument("--slo-ms", type=float, default=20.0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON; the Markdown goes beside it (.md)")
    parser.add_argument("--workdir", type=Path, help="keep models, reports and logs here (default: a temporary folder)")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: combine earlier runs' results as passes of one (best per point) into --out",
    )
    args = parser.parse_args(argv)
    q = args.quick
    args.systems = args.systems or (["flywheel", "triton"] if q else SYSTEMS)
    args.models = args.models or (["mlp"] if q else list(MODELS))
    args.protocols = args.protocols or (["grpc"] if q else PROTOCOLS)
    args.rates = args.rates or ([500, 1000] if q else RATES)
    args.concurrency = [c for c in (args.concurrency or ([] if q else [16])) if c > 0]
    args.triton_delays = args.triton_delays if args.triton_delays is not None else ([1000] if q else TRITON_DELAYS_US)
    args.torchserve_delays = args.torchserve_delays or ([5] if q else TORCHSERVE_DELAYS_MS)
    args.passes = args.passes or (1 if q else 2)
    args.window_ms = args.window_ms or (1000 if q else 2500)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        publish(args.out, merge_runs([json.loads(path.read_text()) for path in args.merge]))
        return 0
    load_at_start = os.getloadavg()
    started = time.monotonic()
    server_cpus, client_cpus = parse_cpus(args.server_cpus), parse_cpus(args.client_cpus)
    why = runnable()
    if why:
        print(why, file=sys.stderr)
        return 2
    loads = [Load("rate", r) for r in args.rates] + [Load("concurrency", c) for c in args.concurrency]
    skipped: dict[str, str] = {}
    points: list[Point] = []
    strays: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-modelserver-perf-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"models → {work}", flush=True)
        write_repositories(work, args.device)
        pin_self(client_cpus)  # the bench and its watcher stay off the server's cores
        run = Run(
            args.client_cpus,
            args.window_ms,
            args.trials,
            args.max_threads,
            work / "reports",
            work / "perf_analyzer.log",
        )
        run.workdir.mkdir(exist_ok=True)
        run.torchserve_inputs = torchserve_inputs(work)
        plan = targets(args, work, work / "logs")
        for pass_no in range(1, args.passes + 1):
            for target in plan if pass_no % 2 else plan[::-1]:
                name = f"{target.system} ({target.setting})" if target.setting else target.system
                if target.system in skipped:  # one setting failed to start: the others would too
                    continue
                t0 = time.monotonic()
                try:
                    with started_on(target.start, server_cpus, client_cpus) as endpoint:
                        with Pinner(endpoint.pid, server_cpus) as pinner:
                            print(
                                f"[pass {pass_no}/{args.passes}] {name}: ready in {time.monotonic() - t0:.1f}s",
                                flush=True,
                            )
                            for model in args.models:
                                for protocol in target.protocols:
                                    if protocol not in args.protocols and protocol != "torchserve":
                                        continue
                                    for load in loads:
                                        p = Point(target.system, target.setting, model, protocol, load.kind, load.value)
                                        p.pass_no = pass_no
                                        measure(run, endpoint, pinner, model, protocol, load, p)
                                        points.append(p)
                                        print(
                                            f"  {model} {protocol} {load.label()}: " + " ".join(point_cells(p)[5:]),
                                            flush=True,
                                        )
                        strays[f"{name}, pass {pass_no}"] = {
                            "re_pinned": pinner.strays,
                            "by_thread_name": pinner.stray_names,
                            "tasks_seen": len(pinner.tasks_seen),
                        }
                except SystemUnavailable as exc:
                    skipped[target.system] = f"{name}: " + (str(exc).strip().splitlines() or [repr(exc)])[0][:300]
                    print(f"{target.system} skipped: {skipped[target.system]}", flush=True)
        kept = keep_best(points, args.passes)
        stamped = stamp()
        result = {
            **stamped,
            "machine": {**stamped["machine"], **machine_facts(args, load_at_start)},
            "quick": args.quick,
            "slo_ms": args.slo_ms,
            "window_ms": args.window_ms,
            "trials": args.trials,
            "passes": args.passes,
            "kept": "per point, the best setting and the better pass (open loop: lowest p99 among clean runs; "
            "closed loop: highest throughput)",
            "strays": sum(s["re_pinned"] for s in strays.values()),
            "strays_by_server": strays,
            "skipped": skipped,
            "wall_s": round(time.monotonic() - started, 1),
            "summary": summarize(kept, args.slo_ms),
            "points": [asdict(p) for p in kept],
            "all_points": [asdict(p) for p in points],
        }
    publish(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model-server benchmark: Flywheel (adaptive / no batching) vs Triton vs TorchServe vs raw onnxruntime.

    python -m bench.modelserver.loadgen_bench [--quick] [--device cpu|cuda] [--systems a,b] [--duration S]

One run, one machine, same ONNX models (bench/modelserver/models.py), systems one after the
other so they never compete for the cores. The load generator is its own process
(bench/modelserver/loadgen.py): open-loop Poisson arrivals at several rates. Every system is
measured in `--repeats` passes, the order reversed each pass (A B C D, D C B A, …), and each
row pools the latencies of its windows: one noisy moment on a shared machine then cannot decide
a row alone, and drift over the run hits every system alike. Each row reports throughput,
p50/p99 (failures count as infinite latency) and goodput at the SLO: the throughput of a rate
whose p99 meets it, else 0. Prints a table and writes bench/results/modelserver.json. On a
shared, noisy machine compare ratios within one run only.

`python -m bench.modelserver` (bench/modelserver/perf.py) is the main bench now: NVIDIA's
perf_analyzer on its own core. This one stays for what perf_analyzer cannot do: the in-process
ceiling, a Python client's view, and GPU machines without perf_analyzer (bench/modelserver/gpu.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.modelserver.loadgen import summarize
from bench.modelserver.models import MODELS, sample, write_repositories
from bench.modelserver.systems import (
    ROOT,
    Endpoint,
    SystemUnavailable,
    start_flywheel,
    start_torchserve,
    start_triton,
)

RESULTS = ROOT / "bench" / "results" / "modelserver.json"
SYSTEMS = [
    "flywheel-adaptive",
    "flywheel-adaptive-http",
    "flywheel-nobatch",
    "triton",
    "triton-http",
    "torchserve",
    "onnxruntime",
]
RATES = {
    ("cpu", False): {"mlp": [500, 1000, 1500, 2000, 2500, 3000, 4000], "cnn": [500, 1000, 1500, 2000, 2500, 3000]},
    ("cpu", True): {"mlp": [300, 1000], "cnn": [150, 500]},
    ("cuda", False): {"mlp": [500, 1000, 2000, 3000, 4000], "cnn": [500, 1000, 2000, 3000, 4000]},
    ("cuda", True): {"mlp": [1000, 3000], "cnn": [1000, 3000]},
}


def machine(device: str) -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "note": "shared development machine (others work beside the bench): compare ratios within one run",
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device == "cuda":
        try:
            info["gpu"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except OSError:
            info["gpu"] = "unknown"
    return info


def ceiling(model_dir: Path, device: str, seconds: float) -> list[dict]:
    """Raw in-process onnxruntime, one thread, at its best batch size: the ceiling for any server."""
    import onnxruntime as ort

    rows = []
    for name, spec in MODELS.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model_dir / f"{name}.onnx"), options, providers=providers)
        best = None
        for batch in (1, 2, 4, 8, 16, 32, 64):
            x = sample(spec, batch)
            for _ in range(5):
                session.run(None, {"input": x})
            times = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                session.run(None, {"input": x})
                times.append(time.perf_counter() - t)
            rate = batch * len(times) / sum(times)
            if best is None or rate > best[0]:
                best = (rate, batch, times)
        rows.append(_ceiling_row("onnxruntime", name, *best))
    return rows


def _ceiling_row(runtime: str, model: str, rate: float, batch: int, times: list[float]) -> dict:
    """One in-process ceiling's result row, at its best batch size (`times`: seconds per batch)."""
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))] * 1000
    return {
        "system": f"{runtime} in-process (batch {batch})",
        "model": model,
        "protocol": "in-process",
        "rate": None,
        "throughput": round(rate, 1),
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(p99, 3),
        "within_slo": round(rate, 1) if p99 <= 20 else None,
        "goodput_at_slo": round(rate, 1) if p99 <= 20 else 0.0,
    }


def ceiling_torch(model_dir: Path, device: str, seconds: float) -> list[dict]:
    """Raw in-process TorchScript at its best batch size (GPU machines without onnxruntime-gpu)."""
    import torch

    rows = []
    for name, spec in MODELS.items():
        module = torch.jit.load(str(model_dir / f"{name}.pt"), map_location=device).eval()
        best = None
        for batch in (1, 2, 4, 8, 16, 32, 64, 256):
            x = torch.from_numpy(sample(spec, batch))
            times = []
            with torch.inference_mode():
                for _ in range(5):
                    module(x.to(device)).cpu()
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    t = time.perf_counter()
                    module(x.to(device)).cpu()  # host → device → host, as a server does
                    times.append(time.perf_counter() - t)
            rate = batch * len(times) / sum(times)
            if best is None or rate > best[0]:
                best = (rate, batch, times)
        rows.append(_ceiling_row("torchscript", name, *best))
    return rows


def pick_runtime(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device == "cpu":
        return "onnx"
    import onnxruntime

    return "onnx" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "torchscript"


def drive(endpoint: Endpoint, model: str, rates: list[int], args: argparse.Namespace, log: Path) -> list[dict]:
    spec = MODELS[model]
    cmd = [sys.executable, "-m", "bench.modelserver.loadgen", "--protocol", endpoint.protocol]
    cmd += ["--target", endpoint.target, "--model", model, "--shape", ",".join(map(str, spec.shape))]
    cmd += ["--rates", ",".join(map(str, rates)), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    out = log.with_name("loadgen-rows.json")
    cmd += ["--slo-ms", str(args.slo_ms), "--raw", "--out", str(out)]
    budget = len(rates) * (args.duration + args.warmup + 5) + 60
    env = {**os.environ, "FLYWHEEL_SERVICE_TOKEN": endpoint.token}  # the load generator calls with it (if any)
    with log.open("ab") as err:
        subprocess.run(cmd, cwd=ROOT, stdout=err, stderr=err, timeout=budget, check=True, env=env)
    return json.loads(out.read_text())


def system_context(name: str, repos: Path, workdir: Path, device: str) -> AbstractContextManager[Endpoint]:
    if name == "flywheel-adaptive":
        return start_flywheel(repos / "flywheel", workdir, "adaptive")
    if name == "flywheel-adaptive-http":
        return start_flywheel(repos / "flywheel", workdir, "adaptive", "v2-http")
    if name == "flywheel-nobatch":
        return start_flywheel(repos / "flywheel", workdir, "off")
    if name == "triton":
        return start_triton(repos / "triton", workdir)
    if name == "triton-http":
        return start_triton(repos / "triton", workdir, "v2-http")
    if name == "torchserve":
        return start_torchserve(repos / "torchserve", workdir, {n: s.shape for n, s in MODELS.items()}, device)
    raise ValueError(name)


PROTOCOL = {"grpc": "grpc", "v2-http": "http (v2, binary)", "torchserve": "http"}


def render(rows: list[dict], skipped: dict[str, str], console: Console, slo_ms: float) -> None:
    table = Table(
        title=f"Model servers, open-loop Poisson load (goodput: throughput at a rate whose p99 ≤ {slo_ms:g} ms)"
    )
    cols = ("system", "model", "protocol", "rate/s", "throughput/s", "p50 ms", "p99 ms", "≤SLO/s", "goodput/s")
    for col in cols:
        table.add_column(col, justify="left" if col in ("system", "model", "protocol") else "right")
    fmt = lambda v: "-" if v is None else (f"{v:.0f}" if v >= 1000 else f"{v:g}")  # noqa: E731
    for r in rows:
        table.add_row(
            r["system"], r["model"], r["protocol"], fmt(r["rate"]), fmt(r["throughput"]),
            fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r.get("within_slo")), fmt(r["goodput_at_slo"]),
        )  # fmt: skip
    console.print(table)
    best = Table(title=f"Best goodput at p99 ≤ {slo_ms:g} ms (requests/s)")
    best.add_column("system")
    models = list(MODELS)
    for m in models:
        best.add_column(m, justify="right")
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for s in systems:
        cells = []
        for m in models:
            goods = [r["goodput_at_slo"] for r in rows if r["system"] == s and r["model"] == m]
            cells.append(f"{max(goods):.0f}" if goods else "-")
        best.add_row(s, *cells)
    console.print(best)
    for name, why in skipped.items():
        console.print(f"[yellow]skipped {name}[/]: {why}")


def summary(rows: list[dict]) -> dict:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r["system"], {})
        out[r["system"]][r["model"]] = max(out[r["system"]].get(r["model"], 0.0), r["goodput_at_slo"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modelserver.loadgen_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="two rates per model, short windows (~2 minutes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnx", "torchscript"],
        default="auto",
        help="auto: onnx, except on cuda without onnxruntime-gpu, where TorchScript on CUDA",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--duration", type=float, help="measured seconds per rate (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each rate (default 1, quick 0.5)")
    parser.add_argument("--slo-ms", type=float, default=20.0)
    parser.add_argument(
        "--repeats", type=int, help="passes over every system, order reversed each pass (default 2, quick 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, help="keep models and logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.repeats = args.repeats or (1 if args.quick else 2)
    console = Console(width=150)
    systems = [s for s in args.systems.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    rates = RATES[(args.device, args.quick)]
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="bench-modelserver-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        console.print(f"models → {work} (torch → ONNX; Triton, TorchServe and Flywheel layouts)")
        runtime = pick_runtime(args.runtime, args.device)
        console.print(f"runtime: {runtime} on {args.device}")
        write_repositories(work, args.device, runtime)
        rows: list[dict] = []
        skipped: dict[str, str] = {}
        if "onnxruntime" in systems:
            console.print("in-process ceiling…")
            seconds = 0.3 if args.quick else 1.0
            if runtime == "onnx":
                rows += ceiling(work / "onnx", args.device, seconds)
            else:
                rows += ceiling_torch(work / "torchscript", args.device, seconds)
        servers = [s for s in systems if s != "onnxruntime"]
        if "torchserve" in servers and runtime != "onnx":
            skipped["torchserve"] = "its handler runs onnxruntime, and this run uses TorchScript"
            servers.remove("torchserve")
        windows: dict[tuple[str, str, float], list[dict]] = {}  # (system, model, rate) → one row per window
        protocols: dict[str, str] = {}
        for rep in range(args.repeats):
            for name in servers if rep % 2 == 0 else servers[::-1]:
                if name in skipped:
                    continue
                logdir = work / "logs" / name
                logdir.mkdir(parents=True, exist_ok=True)
                t0 = time.monotonic()
                try:
                    with system_context(name, work, logdir, args.device) as endpoint:
                        console.print(f"[{rep + 1}/{args.repeats}] {name}: ready in {time.monotonic() - t0:.1f}s")
                        protocols[name] = PROTOCOL[endpoint.protocol]
                        for model in models:
                            for r in drive(endpoint, model, rates[model], args, logdir / "loadgen.log"):
                                windows.setdefault((name, model, r["rate"]), []).append(r)
                                console.print(
                                    f"  {model} @ {r['rate']:g}/s: {r['throughput']:g}/s p99 {r['p99_ms']} ms"
                                )
                except (SystemUnavailable, subprocess.SubprocessError) as exc:
                    skipped[name] = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
                    console.print(f"[red]{name} failed[/]: {str(exc)[-1500:]}")
        for (name, model, rate), ws in windows.items():
            if name in skipped:
                continue
            latencies = [math.inf if x is None else x / 1000 for w in ws for x in w["latencies_ms"]]
            row = summarize(rate, args.duration * len(ws), latencies, args.slo_ms)
            row["windows"] = len(ws)
            row["window_p99_ms"] = [w["p99_ms"] for w in ws]
            rows.append({"system": name, "model": model, "protocol": protocols[name], **row})
        render(rows, skipped, console, args.slo_ms)
        result = {
            "machine": machine(args.device),
            "slo_ms": args.slo_ms,
            "quick": args.quick,
            "runtime": runtime,
            "window_s": args.duration,
            "repeats": args.repeats,
            "wall_s": round(time.monotonic() - started, 1),
            "rows": rows,
            "best_goodput_at_slo": summary(rows),
            "skipped": skipped,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.out} in {result['wall_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

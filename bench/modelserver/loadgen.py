"""Open-loop Poisson load generator, run as its own process by the benchmark.

    python -m bench.modelserver.loadgen --protocol grpc --target 127.0.0.1:8001 --model mlp \
        --shape 64 --rates 200,500 --duration 5 [--warmup 1] [--slo-ms 20]

Requests leave at exponentially spaced instants whatever the answers do (no coordinated
omission: latency counts from the instant a request was due). A failure or a timeout counts as
an infinite latency, so it lands in p99. Prints one JSON list of rows on stdout.

gRPC uses the KServe v2 stubs generated from protos/ (`inference.GRPCInferenceService`, the
same wire messages Triton speaks); this process never imports tritonclient.grpc (the two
register the same protobuf names), so the GPU run needs no tritonclient wheel.
`--protocol v2-http` POSTs KServe v2 REST with binary tensors (as tritonclient.http does);
`--protocol torchserve` POSTs raw float32 bytes to TorchServe's /predictions/<model>. Both on aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize(rate: float, window_s: float, latencies: list[float], slo_ms: float) -> dict:
    """latencies in seconds, math.inf for a failed request."""
    ok = [x for x in latencies if math.isfinite(x)]
    p50, p99 = _percentile(latencies, 50) * 1000, _percentile(latencies, 99) * 1000
    throughput = len(ok) / window_s
    return {
        "rate": rate,
        "sent": len(latencies),
        "ok": len(ok),
        "errors": len(latencies) - len(ok),
        "throughput": round(throughput, 1),
        "p50_ms": round(p50, 2) if math.isfinite(p50) else None,
        "p99_ms": round(p99, 2) if math.isfinite(p99) else None,
        "within_slo": round(sum(1 for x in ok if x * 1000 <= slo_ms) / window_s, 1),
        "goodput_at_slo": round(throughput, 1) if p99 <= slo_ms else 0.0,
    }


async def run_rate(call: Callable[[], Awaitable[None]], rate: float, duration: float, warmup: float) -> list[float]:
    """Send at `rate`/s for warmup+duration seconds; return latencies of the requests due after warm-up."""
    latencies: list[float] = []
    tasks: set[asyncio.Task] = set()
    rng = random.Random(12345)
    start = time.perf_counter()
    due = start
    end = start + warmup + duration

    async def one(t_due: float, measured: bool) -> None:
        try:
            await call()
            latency = time.perf_counter() - t_due
        except Exception:  # noqa: BLE001 - any failure is an infinite latency
            latency = math.inf
        if measured:
            latencies.append(latency)

    while True:
        due += rng.expovariate(rate)
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, due >= start + warmup))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    return latencies


def _credential() -> dict[str, str]:
    """`authorization` for a system that admits callers by token (FLYWHEEL_SERVICE_TOKEN, set by the bench)."""
    token = os.environ.get("FLYWHEEL_SERVICE_TOKEN", "")
    return {"authorization": f"Bearer {token}"} if token else {}


async def grpc_caller(target: str, model: str, payload: bytes, shape: list[int], timeout_s: float):
    import grpc

    from services.genproto.inference import grpc_predict_v2_pb2 as service_pb2
    from services.genproto.inference import grpc_predict_v2_pb2_grpc as service_pb2_grpc

    channel = grpc.aio.insecure_channel(target)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend(shape)
    request.outputs.add().name = "output"
    request.raw_input_contents.append(payload)
    await stub.ServerReady(service_pb2.ServerReadyRequest(), metadata=tuple(_credential().items()), timeout=10)

    metadata = tuple(_credential().items())

    async def call() -> None:
        await stub.ModelInfer(request, metadata=metadata, timeout=timeout_s)

    return call, channel.close


async def torchserve_caller(target: str, model: str, payload: bytes, timeout_s: float):
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )
    url = f"http://{target}/predictions/{model}"

    async def call() -> None:
        async with session.post(url, data=payload, headers={"Content-Type": "application/octet-stream"}) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")

    return call, session.close


async def v2_http_caller(target: str, model: str, payload: bytes, shape: list[int], timeout_s: float):
    """KServe v2 REST with Triton's binary tensor extension (what tritonclient.http sends), on aiohttp."""
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )
    url = f"http://{target}/v2/models/{model}/infer"
    head = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(payload)}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = head + payload
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
        **_credential(),
    }

    async def call() -> None:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")

    return call, session.close


async def main_async(args: argparse.Namespace) -> list[dict]:
    shape = [int(d) for d in args.shape.split(",")]
    payload = np.random.default_rng(0).random(shape, dtype=np.float32).tobytes()
    if args.protocol == "grpc":
        call, close = await grpc_caller(args.target, args.model, payload, [1, *shape], args.timeout_s)
    elif args.protocol == "v2-http":
        call, close = await v2_http_caller(args.target, args.model, payload, [1, *shape], args.timeout_s)
    else:
        call, close = await torchserve_caller(args.target, args.model, payload, args.timeout_s)
    rows = []
    try:
        for _ in range(20):  # warm the connection and the model
            await call()
        for rate in [float(r) for r in args.rates.split(",")]:
            # The collector's pauses would be counted as the server's latency: none while measuring.
            gc.collect()
            gc.disable()
            try:
                latencies = await run_rate(call, rate, args.duration, args.warmup)
            finally:
                gc.enable()
            row = summarize(rate, args.duration, latencies, args.slo_ms)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.raw:
                row["latencies_ms"] = [round(x * 1000, 3) if math.isfinite(x) else None for x in latencies]
            rows.append(row)
            # Past saturation the next, higher rate tells nothing new and costs a full window.
            if row["throughput"] < 0.8 * rate or row["errors"] > 0.05 * max(1, row["sent"]):
                break
    finally:
        await close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modelserver.loadgen", description=__doc__)
    parser.add_argument("--protocol", choices=["grpc", "v2-http", "torchserve"], required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="one request's input shape without the batch, e.g. 1,28,28")
    parser.add_argument("--rates", required=True, help="requests per second, comma-separated, ascending")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--slo-ms", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=1.0, help="per-request deadline")
    parser.add_argument("--raw", action="store_true", help="add each row's latencies (ms, null = failed)")
    parser.add_argument("--out", type=Path, help="write the rows here instead of stdout")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = json.dumps(asyncio.run(main_async(args)))
    if args.out is not None:
        args.out.write_text(rows)
    else:
        os.set_blocking(sys.stdout.fileno(), True)  # the event loop may leave it non-blocking: no short writes
        print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

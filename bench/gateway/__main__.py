"""`make bench-gateway`: the gateway's added latency, measured against the model server directly.

One run, same load, same model: a Tansu broker (prediction logs on), the model server and the
gateway as real processes on 127.0.0.1. Four main targets — model server gRPC, gateway gRPC, model
server REST, gateway REST — get the same closed-loop load (C concurrent clients, N requests each
level), interleaved in rounds so drift on a shared machine hits all of them alike. Prints a table
and writes bench/results/gateway.json. The client runs in this process: on a small machine it
competes with the servers for CPU, which inflates every number alike. A fifth target, a bare
grpc.aio proxy that forwards bytes (bench/gateway/bare_proxy.py), shows the floor of one more
Python gRPC hop, so the gateway's own cost is the difference between it and the gateway.
Each row also has the CPU the server processes on its path spent per request (read from /proc),
in all and in the first of them (the gateway, the proxy or the model server itself):
unlike latency, that hardly moves with the machine's load, so it compares runs from busy sittings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench import report
from bench.gateway.model import write_digits_model
from services.devstack.brokers import start_broker
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port, wait_for_port
from services.devstack.stack import spec
from services.devstack.supervisor import wait_ready
from services.events import ensure_topics
from services.gateway.keys import KeyStore
from services.gateway.tables import MIGRATIONS
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.storage import Database, migrate

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gateway.json"
MODEL = "digits"


def _cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), from /proc: the servers' cost, whatever the box's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _grpc_request(features: np.ndarray) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL, model_version="1")
    req.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    req.raw_input_contents.append(features.tobytes())
    return req


async def _run_grpc(
    addr: str, metadata: list[tuple[str, str]], n: int, concurrency: int, errors: list[int]
) -> list[float]:
    request = _grpc_request(np.random.default_rng(0).random((1, 64), dtype=np.float32))
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request, metadata=metadata, timeout=10)
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                try:
                    await stub.ModelInfer(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError:
                    errors[0] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _run_http(url: str, headers: dict[str, str], n: int, concurrency: int, errors: list[int]) -> list[float]:
    features = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": features.ravel().tolist()}]}
    ).encode()
    headers = {**headers, "content-type": "application/json"}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # TCP_NODELAY: without it, Nagle + delayed ACK add ~40 ms to a POST whose body is a second write.
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        (await client.post(url, content=body, headers=headers)).raise_for_status()
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    errors[0] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per target and load level")
    parser.add_argument("--concurrency", default="1,8", help="load levels (concurrent clients), comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per load level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    repo = write_digits_model(work / "models", MODEL)
    db_url = f"sqlite:///{work / 'flywheel.db'}"
    migrate(db_url, [MIGRATIONS])
    key = KeyStore(Database(db_url)).create("bench", ["predict"], rate_per_s=1e6, burst=1_000_000)
    creds = StackCredentials.generate()  # the model server admits the gateway and the operator (the direct paths)
    broker = start_broker("tansu", work)
    ensure_topics(broker.bootstrap)
    ms_http, ms_grpc, gw_http, gw_grpc, bare = (free_port() for _ in range(5))
    env = {**os.environ, "FLYWHEEL_HOME": str(work), "FLYWHEEL_LOG_LEVEL": "WARNING"}
    ports = ["--http-port", str(ms_http), "--grpc-port", str(ms_grpc)]
    ms = subprocess.Popen(
        [sys.executable, "-m", "services.modelserver", "--model-repository", str(repo), *ports],
        env={**env, **creds.service_env(spec("modelserver"))},
    )
    gw = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"],
        env={
            **env,
            "FLYWHEEL_DATABASE_URL": db_url,
            "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FLYWHEEL_GATEWAY_HTTP_PORT": str(gw_http),
            "FLYWHEEL_GATEWAY_GRPC_PORT": str(gw_grpc),
            "FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR": f"127.0.0.1:{ms_http}",
            "FLYWHEEL_GATEWAY_MODEL_REPOSITORY": str(repo),
            **creds.service_env(spec("gateway")),
        },
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway.bare_proxy", f"127.0.0.1:{bare}", f"127.0.0.1:{ms_grpc}"], env=env
    )
    try:
        wait_ready(f"http://127.0.0.1:{ms_http}/readyz", ms)
        if not wait_for_port("127.0.0.1", bare, 30):
            raise RuntimeError("bare proxy did not start")
        wait_ready(f"http://127.0.0.1:{gw_http}/readyz", gw)
        md = [("authorization", f"Bearer {key}")]
        headers = {"Authorization": f"Bearer {key}"}
        operator = creds.bearer("operator")
        op_md = list(operator.items())
        targets = {
            ("grpc", "direct"): lambda n, c, e: _run_grpc(f"127.0.0.1:{ms_grpc}", op_md, n, c, e),
            ("grpc", "bare-proxy"): lambda n, c, e: _run_grpc(f"127.0.0.1:{bare}", op_md, n, c, e),
            ("grpc", "gateway"): lambda n, c, e: _run_grpc(f"127.0.0.1:{gw_grpc}", md, n, c, e),
            ("http", "direct"): lambda n, c, e: _run_http(
                f"http://127.0.0.1:{ms_http}/v2/models/{MODEL}/versions/1/infer", operator, n, c, e
            ),
            ("http", "gateway"): lambda n, c, e: _run_http(
                f"http://127.0.0.1:{gw_http}/v2/models/{MODEL}/versions/1/infer", headers, n, c, e
            ),
        }
        # The server processes each target's requests pass through (their CPU is the path's cost).
        servers = {"direct": [ms.pid], "bare-proxy": [proxy.pid, ms.pid], "gateway": [gw.pid, ms.pid]}
        rows = []
        for c in levels:
            lat: dict[tuple[str, str], list[float]] = {t: [] for t in targets}
            wall: dict[tuple[str, str], float] = dict.fromkeys(targets, 0.0)
            cpu: dict[tuple[str, str], float] = dict.fromkeys(targets, 0.0)
            front: dict[tuple[str, str], float] = dict.fromkeys(targets, 0.0)  # the first process on the path
            errs: dict[tuple[str, str], list[int]] = {t: [0] for t in targets}
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for t, run in targets.items():
                    before = [_cpu_s(pid) for pid in servers[t[1]]]
                    t0 = time.perf_counter()
                    lat[t] += asyncio.run(run(per_round, c, errs[t]))
                    wall[t] += time.perf_counter() - t0
                    spent = [_cpu_s(pid) - b for pid, b in zip(servers[t[1]], before, strict=True)]
                    cpu[t] += sum(spent)
                    front[t] += spent[0]
            for t in targets:
                arr = np.array(lat[t]) * 1000
                rows.append(
                    {
                        "protocol": t[0],
                        "path": t[1],
                        "concurrency": c,
                        "requests": len(arr),
                        "errors": errs[t][0],
                        "p50_ms": float(np.percentile(arr, 50)),
                        "p99_ms": float(np.percentile(arr, 99)),
                        "throughput_rps": len(arr) / wall[t],
                        "server_cpu_ms_per_request": cpu[t] * 1000 / max(1, len(arr)),
                        "front_cpu_ms_per_request": front[t] * 1000 / max(1, len(arr)),
                    }
                )
    finally:
        proxy.kill()
        proxy.wait()
        _stop(gw)
        _stop(ms)
        broker.stop()

    added = []
    for c in levels:
        for proto in ("grpc", "http"):
            d = next(r for r in rows if r["protocol"] == proto and r["path"] == "direct" and r["concurrency"] == c)
            g = next(r for r in rows if r["protocol"] == proto and r["path"] == "gateway" and r["concurrency"] == c)
            row = {
                "protocol": proto,
                "concurrency": c,
                "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                "throughput_ratio": g["throughput_rps"] / d["throughput_rps"],
                "added_server_cpu_ms_per_request": g["server_cpu_ms_per_request"] - d["server_cpu_ms_per_request"],
            }
            b = next((r for r in rows if r["path"] == "bare-proxy" and r["concurrency"] == c and proto == "grpc"), None)
            if b is not None:
                row["bare_proxy_added_p50_ms"] = b["p50_ms"] - d["p50_ms"]
                row["gateway_over_bare_proxy_p50_ms"] = g["p50_ms"] - b["p50_ms"]
            added.append(row)
    table = Table(title="gateway vs model server direct (same load, one run)")
    for col in ("protocol", "path", "clients", "requests", "errors", "p50 ms", "p99 ms", "req/s", "server CPU ms/req"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["protocol"],
            r["path"],
            str(r["concurrency"]),
            str(r["requests"]),
            str(r["errors"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['throughput_rps']:.0f}",
            f"{r['server_cpu_ms_per_request']:.3f}",
        )
    console = Console()
    console.print(table)
    for a in added:
        console.print(
            f"{a['protocol']} × {a['concurrency']} clients: gateway adds {a['added_p50_ms']:.2f} ms at p50, "
            f"{a['added_p99_ms']:.2f} ms at p99, {a['added_server_cpu_ms_per_request']:.3f} ms of server CPU "
            f"a request; throughput {a['throughput_ratio']:.0%} of direct"
            + (
                f"; a bare byte-forwarding proxy adds {a['bare_proxy_added_p50_ms']:.2f} ms at p50"
                if "bare_proxy_added_p50_ms" in a
                else ""
            )
        )
    result = {
        "benchmark": "gateway",
        **report.stamp(),
        "setup": {
            "model": "digits MLP 64-32-10 (ONNX), batch 1",
            "gateway": "API key auth, rate limit, routing, prediction logs to Tansu",
            "rounds": args.rounds,
        },
        "results": rows,
        "added": added,
        "target": "<= 1 ms added at p50",
    }
    report.write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-gateway-hop`: which protocol the gateway should speak to the model server, by measurement.

One model server (a real process on 127.0.0.1, the digits MLP, batch 1) and, in this process, the
candidate clients for the hop, each doing what the gateway's path needs: take a decoded request
(`services.oip.messages.InferRequest`), send it, and hand back a decoded answer (`InferResponse`).

- `rest-httptools`: the gateway's own client (services/gateway/modelserver_client.py): v2 REST,
  binary tensors both ways, keep-alive HTTP/1.1 on httptools;
- `rest-aiohttp`, `rest-httpx`: the same request bytes through aiohttp and httpx;
- `grpc-aio`: `inference.GRPCInferenceService/ModelInfer` through a grpc.aio stub, raw tensors.

Reported per client and load (concurrent callers): p50/p99 of a round trip and the client's CPU
per request (this process's CPU time over the requests sent): the CPU is what the hop takes out of
the gateway's budget on a busy box. Rounds alternate the clients so drift hits all alike. Writes
bench/results/gateway-hop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench import report
from bench.gateway.model import write_digits_model
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port
from services.devstack.stack import spec
from services.devstack.supervisor import wait_ready
from services.gateway.breaker import Breakers
from services.gateway.deadline import Deadline
from services.gateway.modelserver_client import ModelServerClient
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.oip import rest_codec
from services.oip.messages import InferRequest, InferResponse

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gateway-hop.json"
MODEL = "digits"
Infer = Callable[[InferRequest], Awaitable[InferResponse]]


def _grpc_message(request: InferRequest) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=request.model, model_version=request.version, id=request.id)
    for name, array in request.inputs.items():
        message.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        message.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    for name in request.outputs:
        message.outputs.add(name=name)
    return message


def _grpc_answer(message: pb.ModelInferResponse) -> InferResponse:
    outputs = {
        t.name: np.frombuffer(raw, np.float32).reshape(list(t.shape))
        for t, raw in zip(message.outputs, message.raw_output_contents, strict=True)
    }
    return InferResponse(message.model_name, message.model_version, message.id, outputs)


def _rest_answer(status: int, headers: dict[str, str], body: bytes) -> InferResponse:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
    return rest_codec.decode_response(body, headers.get(rest_codec.HEADER_LENGTH_KEY))


async def _measure(infer: Infer, request: InferRequest, n: int, concurrency: int) -> tuple[list[float], float]:
    """(round-trip latencies in s, this process's CPU seconds) for n requests from `concurrency` callers."""
    await infer(request)  # connections up before the clock starts
    todo = iter(range(n))
    latencies: list[float] = []

    async def caller() -> None:
        for _ in todo:
            t0 = time.perf_counter()
            await infer(request)
            latencies.append(time.perf_counter() - t0)

    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.process_time() - cpu0


async def _round(
    client: str, http_addr: str, grpc_addr: str, request: InferRequest, n: int, c: int, creds: StackCredentials
):
    """Every client calls as the gateway does, with the gateway's service credential."""
    url = f"http://{http_addr}/v2/models/{MODEL}/versions/1/infer"
    credential = creds.bearer("gateway")
    if client == "rest-httptools":
        gateway = ModelServerClient(http_addr, Breakers(1000, 1), retries=0, backoff_s=0, token=creds.token("gateway"))
        try:
            return await _measure(lambda r: gateway.infer(r, "bench", Deadline.within(10)), request, n, c)
        finally:
            await gateway.close()
    if client == "rest-aiohttp":
        connector = aiohttp.TCPConnector(limit=c)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def via_aiohttp(r: InferRequest) -> InferResponse:
                body, headers = rest_codec.encode_request(r)
                async with session.post(url, data=body, headers={**headers, **credential}) as answer:
                    return _rest_answer(answer.status, dict(answer.headers.items()), await answer.read())

            return await _measure(via_aiohttp, request, n, c)
    if client == "rest-httpx":
        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        transport = httpx.AsyncHTTPTransport(
            limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        async with httpx.AsyncClient(transport=transport, timeout=10) as session:

            async def via_httpx(r: InferRequest) -> InferResponse:
                body, headers = rest_codec.encode_request(r)
                answer = await session.post(url, content=body, headers={**headers, **credential})
                return _rest_answer(answer.status_code, dict(answer.headers.items()), answer.content)

            return await _measure(via_httpx, request, n, c)
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def via_grpc(r: InferRequest) -> InferResponse:
            return _grpc_answer(await stub.ModelInfer(_grpc_message(r), metadata=list(credential.items()), timeout=10))

        return await _measure(via_grpc, request, n, c)


CLIENTS = ("rest-httptools", "rest-aiohttp", "rest-httpx", "grpc-aio")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.hop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per client and load level")
    parser.add_argument("--concurrency", default="1,8", help="load levels (concurrent callers), comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per load level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-hop-"))
    creds = StackCredentials.generate()
    repo = write_digits_model(work / "models", MODEL)
    http_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.modelserver",
            "--model-repository",
            str(repo),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        env={
            **os.environ,
            "FLYWHEEL_HOME": str(work),
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            **creds.service_env(spec("modelserver")),
        },
    )
    features = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    request = InferRequest(MODEL, "1", {"features": features}, outputs=["probabilities"])
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{http_port}/readyz", server)
        for c in levels:
            latencies: dict[str, list[float]] = {k: [] for k in CLIENTS}
            cpu = dict.fromkeys(CLIENTS, 0.0)
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for client in CLIENTS:
                    lat, spent = asyncio.run(
                        _round(client, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", request, per_round, c, creds)
                    )
                    latencies[client] += lat
                    cpu[client] += spent
            for client in CLIENTS:
                ms = np.array(latencies[client]) * 1000
                rows.append(
                    {
                        "client": client,
                        "concurrency": c,
                        "requests": len(ms),
                        "p50_ms": float(np.percentile(ms, 50)),
                        "p99_ms": float(np.percentile(ms, 99)),
                        "client_cpu_us_per_request": cpu[client] / len(ms) * 1e6,
                    }
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    table = Table(title="gateway → model server hop: one inference round trip, decoded request to decoded answer")
    for col in ("client", "callers", "requests", "p50 ms", "p99 ms", "client CPU µs/req"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["client"],
            str(r["concurrency"]),
            str(r["requests"]),
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['client_cpu_us_per_request']:.0f}",
        )
    console = Console()
    console.print(table)
    result = {
        "benchmark": "gateway-hop",
        **report.stamp(),
        "setup": {"model": "digits MLP 64-32-10 (ONNX), batch 1", "rounds": args.rounds},
        "results": rows,
    }
    report.write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

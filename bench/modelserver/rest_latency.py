"""Model server REST latency, one client at a time: `python -m bench.modelserver.rest_latency [--requests N]`.

Starts `python -m services.modelserver` on 127.0.0.1 with the digits MLP (64 → 32 → 10, ONNX) and
sends batch-1 inferences over keep-alive connections, one at a time, from several clients:
httpx, the standard library's http.client and tritonclient.http, each with a JSON body and with
Triton's binary tensor extension, plus tritonclient.grpc as the reference. Targets are
interleaved in rounds so drift on a shared machine hits all alike. Prints a table of p50/p99 and
writes bench/results/modelserver_rest.json. Bounded: N requests per target (default 200).

A REST p50 near 40 ms (against ~1 ms over gRPC) is the Nagle / delayed-ACK stall: the server
writes headers and body separately on a socket without TCP_NODELAY.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from rich.console import Console
from rich.table import Table

from bench import report
from bench.gateway.model import write_digits_model
from services.devstack.credentials import StackCredentials
from services.devstack.ports import free_port
from services.devstack.stack import spec
from services.devstack.supervisor import wait_ready

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "modelserver_rest.json"
MODEL = "digits"
HEADER_LENGTH = "Inference-Header-Content-Length"


def _bodies(features: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The two REST bodies: KServe v2 JSON, and Triton's binary extension (binary input and output)."""
    json_body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": features.ravel().tolist()}]}
    ).encode()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": features.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return {
        "json": (json_body, {"Content-Type": "application/json"}),
        "binary": (
            head + features.tobytes(),
            {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))},
        ),
    }


def _targets(
    http_addr: str, grpc_addr: str, features: np.ndarray, credential: dict[str, str]
) -> dict[tuple[str, str], Callable[[], None]]:
    """Each client calls with `credential` (the model server admits no caller without one)."""
    path = f"/v2/models/{MODEL}/versions/1/infer"
    bodies = {kind: (body, {**headers, **credential}) for kind, (body, headers) in _bodies(features).items()}
    # httpx as bench/gateway uses it: keep-alive, TCP_NODELAY on the client side.
    hx = httpx.Client(
        transport=httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]), timeout=10
    )
    # http.client: keep-alive, the kernel's defaults (Nagle on), headers and body in one send.
    host, port = http_addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    tclient = thttp.InferenceServerClient(http_addr, network_timeout=10)
    gclient = tgrpc.InferenceServerClient(grpc_addr)

    def via_httpx(kind: str) -> Callable[[], None]:
        body, headers = bodies[kind]
        return lambda: hx.post(f"http://{http_addr}{path}", content=body, headers=headers).raise_for_status()

    def via_http_client(kind: str) -> Callable[[], None]:
        body, headers = bodies[kind]

        def call() -> None:
            try:
                conn.request("POST", path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):  # the server closed it while idle: reconnect
                conn.close()
                conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"http.client: status {response.status}")

        return call

    def via_tritonclient(kind: str) -> Callable[[], None]:
        binary = kind == "binary"
        inp = thttp.InferInput("features", [1, 64], "FP32")
        inp.set_data_from_numpy(features, binary_data=binary)
        out = thttp.InferRequestedOutput("probabilities", binary_data=binary)
        return lambda: tclient.infer(MODEL, [inp], model_version="1", outputs=[out], headers=credential).as_numpy(
            "probabilities"
        )

    ginp = tgrpc.InferInput("features", [1, 64], "FP32")
    ginp.set_data_from_numpy(features)

    return {
        ("httpx", "json"): via_httpx("json"),
        ("httpx", "binary"): via_httpx("binary"),
        ("http.client", "json"): via_http_client("json"),
        ("http.client", "binary"): via_http_client("binary"),
        ("tritonclient.http", "json"): via_tritonclient("json"),
        ("tritonclient.http", "binary"): via_tritonclient("binary"),
        ("tritonclient.grpc", "protobuf"): lambda: gclient.infer(
            MODEL, [ginp], model_version="1", headers=credential
        ).as_numpy("probabilities"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per target (default 200)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="bench-ms-rest-") as tmp:
        repo = write_digits_model(Path(tmp) / "models", MODEL)
        http_port, grpc_port = free_port(), free_port()
        creds = StackCredentials.generate()
        env = {
            **os.environ,
            "FLYWHEEL_MODELSERVER_MODEL_REPOSITORY": str(repo),
            "FLYWHEEL_MODELSERVER_HOST": "127.0.0.1",
            "FLYWHEEL_MODELSERVER_HTTP_PORT": str(http_port),
            "FLYWHEEL_MODELSERVER_GRPC_PORT": str(grpc_port),
            **creds.service_env(spec("modelserver")),
        }
        log = Path(tmp) / "modelserver.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.modelserver"], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        try:
            wait_ready(f"http://127.0.0.1:{http_port}/readyz", proc)
            features = np.random.default_rng(0).random((1, 64), dtype=np.float32)
            targets = _targets(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", features, creds.bearer("operator"))
            lat: dict[tuple[str, str], list[float]] = {t: [] for t in targets}
            for call in targets.values():
                for _ in range(5):  # connect, warm up
                    call()
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for t, call in targets.items():
                    call()  # untimed: reopens a connection the server closed after its keep-alive timeout
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        call()
                        lat[t].append((time.perf_counter() - t0) * 1000)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            if code != 0:
                print(log.read_text()[-4000:], file=sys.stderr)

    rows = []
    for (client, body), ms in lat.items():
        arr = np.asarray(ms)
        rows.append(
            {
                "protocol": "grpc" if client.endswith("grpc") else "http",
                "client": client,
                "body": body,
                "requests": len(arr),
                "p50_ms": float(np.percentile(arr, 50)),
                "p99_ms": float(np.percentile(arr, 99)),
                "mean_ms": float(arr.mean()),
            }
        )
    table = Table(title="model server latency, 1 client, keep-alive, digits MLP batch 1")
    for col in ("client", "body", "requests", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(col, justify="left" if col in ("client", "body") else "right")
    for r in rows:
        table.add_row(
            r["client"],
            r["body"],
            str(r["requests"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['mean_ms']:.2f}",
        )
    console.print(table)
    result = {
        "benchmark": "modelserver_rest",
        **report.stamp(),
        "setup": {
            "model": "digits MLP 64-32-10 (ONNX), batch 1",
            "load": "closed loop, 1 client, keep-alive, targets interleaved",
            "rounds": args.rounds,
        },
        "results": rows,
        "target": "REST p50 within a few ms of gRPC (no ~40 ms Nagle/delayed-ACK stall)",
    }
    report.write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

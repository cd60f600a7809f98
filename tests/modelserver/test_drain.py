"""SIGTERM drains the model server without failing a request (services/transportkit/drain.py).

A real server process, a keep-alive HTTP client (http.client: one socket, reopened only after the
server says `Connection: close`) and a gRPC client on one channel.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np

from tests.modelserver.artifacts import write_onnx_model
from tests.modelserver.conftest import running_server
from tests.modelserver.triton_grpc import tgrpc
from tests.support.waiting import wait_until

BODY = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}).encode()
DRAIN_S = 8.0


def _infer(conn: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[int, str]:
    """(status, the Connection header) of one inference on `conn`."""
    conn.request("POST", "/v2/models/digits/infer", BODY, {**headers, "content-type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    return answer.status, (answer.getheader("connection") or "").lower()


def test_sigterm_answers_kept_alive_requests_with_connection_close_then_exits(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "digits", [1])
    with running_server(repo, tmp_path, drain_timeout_s=DRAIN_S) as server:
        host, port = server.http.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        before = [_infer(conn, server.headers) for _ in range(5)]
        kept = conn.sock
        grpc = server.grpc_client()
        x = np.full((1, 64), 0.5, dtype=np.float32)

        def grpc_infer() -> np.ndarray:
            i = tgrpc.InferInput("features", [1, 64], "FP32")
            i.set_data_from_numpy(x)
            return grpc.infer("digits", [i], client_timeout=30).as_numpy("probabilities")

        expected = grpc_infer()

        server.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        # Unready at once, both ways, while the process still serves.
        wait_until(
            lambda: httpx.get(f"http://{server.http}/readyz", timeout=2).status_code == 503,
            timeout_s=5,
            proc=server.proc,
            message="readiness 503 while draining",
        )
        assert not grpc.is_server_ready()
        # A request on the kept-alive connection is answered, with Connection: close …
        during = [_infer(conn, server.headers)]
        assert conn.sock is None or conn.sock is kept
        # … and so is each one after it (http.client opens a new connection each time).
        during += [_infer(conn, server.headers) for _ in range(3)]
        np.testing.assert_array_equal(grpc_infer(), expected)
        conn.close()

        assert before == [(200, "")] * 5, before
        assert during == [(200, "close")] * 4, during
        code = server.proc.wait(timeout=DRAIN_S + 10)
        took = time.monotonic() - sent
        assert code == 0
        assert took < DRAIN_S + 3, f"took {took:.1f} s to exit with a {DRAIN_S} s drain"

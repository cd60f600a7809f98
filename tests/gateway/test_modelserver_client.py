"""The gateway's one model-server client (keep-alive HTTP/1.1, one retry policy, one error table)
against a scripted uvicorn server, and the hop's encoding of a request and its answer.

The model server cannot be made to answer 503, 429 or 500, or to drop a connection, on cue, so
these tests serve a small ASGI app with real uvicorn on 127.0.0.1 that answers as each step
scripts (a stand-in for the model server's failure modes); the client, its connections,
deadlines, retries and breaker are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest
import uvicorn

from services.devstack.ports import free_port
from services.gateway.breaker import Breakers
from services.gateway.deadline import Deadline
from services.gateway.endpoints import static_resolver
from services.gateway.errors import (
    BackendFailed,
    BackendOverloaded,
    BackendUnavailable,
    CircuitOpen,
    DeadlineExceeded,
    InvalidInput,
)
from services.gateway.http1 import UnsafeHeader, request_head
from services.gateway.modelserver_client import ModelServerClient
from services.gateway.transport.status import ERRORS
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip import grpc_codec, rest_codec
from services.oip.errors import ProtocolError
from services.oip.messages import InferRequest
from services.transportkit.listener import http_listener

ANSWER = {"model_name": "m", "model_version": "1", "outputs": []}


class Scripted:
    """ASGI app: each request takes the next step: an int status, a float delay, or "close"."""

    def __init__(self) -> None:
        self.script: list[int | float | str] = []
        self.calls = 0
        self.seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.calls += 1
        self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.paths.append(scope["raw_path"].decode())
        self.bodies.append(body)
        step = self.script.pop(0) if self.script else 200
        headers = [(b"content-type", b"application/json")]
        if step == "close":
            headers.append((b"connection", b"close"))
            step = 200
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        if step == 429:
            headers.append((b"retry-after-ms", b"2"))
        doc = ANSWER if step == 200 else {"error": f"scripted {step}"}
        await send({"type": "http.response.start", "status": step, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(doc).encode()})


REQUEST = InferRequest(model="m", version="1", inputs={"x": np.zeros((1, 2), np.float32)})
BODY, _ = rest_codec.encode_request(REQUEST)


async def _scripted(scenario: Callable[[Scripted, ModelServerClient], Awaitable[None]]) -> None:
    app = Scripted()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[http_listener("127.0.0.1", port)]))
    while not server.started:
        await asyncio.sleep(0.01)
    client = ModelServerClient(f"127.0.0.1:{port}", Breakers(10, 60), retries=2, backoff_s=0.001)
    try:
        await scenario(app, client)
    finally:
        await client.close()
        server.should_exit = True
        await serving


def _infer(client: ModelServerClient, budget_s: float = 5.0, request_id: str = "r") -> Awaitable[Any]:
    return client.infer(REQUEST, request_id, Deadline.within(budget_s))


def test_client_retries_only_safe_failures_within_budget() -> None:
    async def scenario(app: Scripted, client: ModelServerClient) -> None:
        # Two 503 then 200: answered after two retries, on the same keep-alive connection.
        app.script = [503, 503]
        answer = await _infer(client)
        assert answer.version == "1" and app.calls == 3
        assert app.bodies == [BODY] * 3

        # Overloaded is retried (the request was not run); a 429 that persists is reported as one.
        app.calls, app.script = 0, [429]
        await _infer(client)
        assert app.calls == 2
        app.calls, app.script = 0, [429, 429, 429]
        with pytest.raises(BackendOverloaded):
            await _infer(client)
        assert app.calls == 3

        # Retries stop at the limit.
        app.calls, app.script = 0, [503, 503, 503]
        with pytest.raises(BackendUnavailable):
            await _infer(client)
        assert app.calls == 3

        # Runtime failures and bad requests are never retried.
        for status, error in ((500, BackendFailed), (400, InvalidInput)):
            app.calls, app.script = 0, [status]
            with pytest.raises(error, match=f"scripted {status}"):
                await _infer(client)
            assert app.calls == 1

        # The server closing the connection after an answer: the next request opens a new one.
        app.calls, app.script = 0, ["close", 200]
        await _infer(client)
        await _infer(client)
        assert app.calls == 2

        # The remaining budget travels as X-Flywheel-Timeout-Ms; a slow answer is a 504, not retried.
        app.calls, app.script = 0, [2.0]
        app.seen.clear()
        with pytest.raises(DeadlineExceeded):
            await _infer(client, budget_s=0.3)
        assert app.calls == 1 and 0 < float(app.seen[0]["x-flywheel-timeout-ms"]) <= 300

    asyncio.run(_scripted(scenario))


def test_overload_reaches_the_caller_with_the_servers_hint_and_never_opens_the_circuit() -> None:
    """A 429 means the model server is up and refused before computing: it passes on as 429 /
    RESOURCE_EXHAUSTED with the server's retry hint, and no number of them opens the breaker."""

    async def scenario(app: Scripted, scripted: ModelServerClient) -> None:
        # Its own client: a breaker that opens after 2 failures, and no retries.
        client = ModelServerClient(scripted.addr, Breakers(2, 60), retries=0, backoff_s=0.001)
        try:
            app.calls, app.script = 0, [429] * 5
            for _ in range(5):
                with pytest.raises(BackendOverloaded) as err:
                    await _infer(client)
                assert err.value.retry_after_s == pytest.approx(0.002)  # the server's Retry-After-Ms: 2
            status, headers, body = ERRORS.http(err.value)
            assert status == 429 and headers["Retry-After"] == "1" and headers["Retry-After-Ms"] == "2"
            assert "scripted 429" in json.loads(body)["error"]
            assert ERRORS.status(err.value).grpc == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ERRORS.grpc_trailers(err.value) == (("retry-after-ms", "2"),)
            assert (await _infer(client)).version == "1" and app.calls == 6  # the circuit stayed closed
            # The same breaker does open on failures that are the backend's (so the test above can fail).
            app.script = [503, 503]
            for _ in range(2):
                with pytest.raises(BackendUnavailable):
                    await _infer(client)
            with pytest.raises(CircuitOpen):
                await _infer(client)
        finally:
            await client.close()

    asyncio.run(_scripted(scenario))


def test_client_unreachable_server_opens_the_circuit() -> None:
    async def scenario() -> None:
        client = ModelServerClient(f"127.0.0.1:{free_port()}", Breakers(3, 60), retries=0, backoff_s=0.001)
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                await _infer(client, budget_s=2.0)
        with pytest.raises(CircuitOpen):
            await _infer(client, budget_s=2.0)
        assert "not reachable" in await client.probe(timeout_s=0.5)

    asyncio.run(scenario())


def test_client_never_writes_a_header_it_was_not_meant_to() -> None:
    """Request smuggling: a CR/LF (or any control character) in a value never reaches the wire."""
    smuggled = "r1\r\ncontent-length: 0\r\n\r\nPOST /v2/repository/models/m/unload HTTP/1.1\r\nhost: x"
    for bad in (smuggled, "a\nb", "tab\tinside", "del\x7f", "é"):
        with pytest.raises(UnsafeHeader):
            request_head("POST", "/v2/models/m/infer", "h:1", 0, {"x-request-id": bad})
    with pytest.raises(UnsafeHeader):
        request_head("POST", "/v2/models/m infer", "h:1", 0, {})
    assert request_head("GET", "/v2", "h:1", 0, {"x-request-id": "a b"}).startswith(b"GET /v2 HTTP/1.1\r\n")

    async def scenario(app: Scripted, client: ModelServerClient) -> None:
        with pytest.raises(InvalidInput):
            await _infer(client, request_id=smuggled)
        assert app.calls == 0  # refused before a byte was sent
        # Names the caller chose are percent-encoded into the path, '/' included.
        odd = InferRequest(model="m/../repository", version="", inputs=REQUEST.inputs)
        await client.infer(odd, "r", Deadline.within(5.0))
        assert app.paths[-1] == "/v2/models/m%2F..%2Frepository/infer"

    asyncio.run(_scripted(scenario))


def test_grpc_request_round_trips_through_binary_rest() -> None:
    """ModelInferRequest → binary v2 body (raw and typed contents) → the model server's answer → proto."""
    req = pb.ModelInferRequest(model_name="m", model_version="1", id="r1")
    req.parameters["timeout"].int64_param = 5000
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    req.inputs.add(name="a", datatype="FP32", shape=[2, 3])
    req.inputs.add(name="b", datatype="INT64", shape=[2])
    typed = pb.ModelInferRequest()
    typed.CopyFrom(req)
    typed.inputs[0].contents.fp32_contents.extend(a.ravel().tolist())
    typed.inputs[1].contents.int64_contents.extend([7, 8])
    req.raw_input_contents.extend([a.tobytes(), np.array([7, 8], np.int64).tobytes()])
    for message in (req, typed):
        body, headers = rest_codec.encode_request(grpc_codec.decode_request(message, None, 1 << 20))
        split = int(headers[rest_codec.HEADER_LENGTH_KEY])
        head = json.loads(body[:split])
        assert head["id"] == "r1" and head["parameters"] == {"timeout": 5000, "binary_data_output": True}
        assert [t["parameters"]["binary_data_size"] for t in head["inputs"]] == [24, 16]
        assert body[split:] == a.tobytes() + np.array([7, 8], np.int64).tobytes()

    out = np.array([[0.25, 0.75]], np.float32)
    answer_head = json.dumps(
        {
            "model_name": "m",
            "model_version": "1",
            "id": "r1",
            "outputs": [
                {"name": "p", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
                {"name": "j", "datatype": "INT32", "shape": [2], "data": [1, 2]},
            ],
        }
    ).encode()
    resp = grpc_codec.encode_response(
        rest_codec.decode_response(answer_head + out.tobytes(), str(len(answer_head))), raw=True
    )
    assert resp.model_version == "1" and resp.id == "r1" and [o.name for o in resp.outputs] == ["p", "j"]
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [0.25, 0.75]
    assert np.frombuffer(resp.raw_output_contents[1], np.int32).tolist() == [1, 2]
    with pytest.raises(ProtocolError, match="raw_input_contents"):
        bad = pb.ModelInferRequest(model_name="m")
        bad.inputs.add(name="a", datatype="FP32", shape=[1])
        bad.inputs.add(name="b", datatype="FP32", shape=[1])
        bad.raw_input_contents.append(b"\0\0\0\0")
        grpc_codec.decode_request(bad, None, 1 << 20)


def test_a_503_ejects_that_replica_and_the_retry_goes_to_another() -> None:
    """Two scripted replicas behind one name (a fixed resolver: several A records cannot be made on
    127.0.0.1): a 503 on one is retried on the other, and it gets no traffic while ejected."""

    async def scenario() -> None:
        apps, servers, serving, ports = [], [], [], []
        for _ in range(2):
            app, port = Scripted(), free_port()
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
            serving.append(asyncio.create_task(server.serve(sockets=[http_listener("127.0.0.1", port)])))
            apps.append(app)
            servers.append(server)
            ports.append(port)
        while not all(s.started for s in servers):
            await asyncio.sleep(0.01)
        addrs = [f"127.0.0.1:{p}" for p in ports]
        client = ModelServerClient(
            "modelserver.invalid:8000", Breakers(10, 60), retries=2, backoff_s=0.001, resolve=static_resolver(addrs)
        )
        try:
            await client.endpoints.refresh()
            assert client.endpoints.addrs() == sorted(addrs)
            first = next(i for i, a in enumerate(addrs) if a == client.endpoints.addrs()[0])
            apps[first].script = [503]
            await _infer(client)  # round robin starts at the first address: 503 there, 200 on the other
            assert [a.calls for a in apps] == [1, 1]
            for _ in range(4):  # ejected: everything goes to the other one
                await _infer(client)
            assert apps[first].calls == 1 and apps[1 - first].calls == 5
            # The Host header names the configured name, whichever address served it.
            assert apps[1 - first].seen[-1]["host"] == "modelserver.invalid:8000"
        finally:
            await client.close()
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*serving)

    asyncio.run(scenario())


def test_an_address_that_never_accepts_is_ejected_after_the_connect_limit_not_the_deadline() -> None:
    """A replica's address left in a stale DNS answer after its pod went: connects to it hang (no
    refusal). Made here with a listening socket whose accept queue is full and never drained (Linux
    drops the SYNs: the same hang). The request is answered by the other replica well inside its
    5 s deadline, and the dead address is ejected."""

    async def scenario() -> None:
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        fillers = []
        for _ in range(8):  # fill the accept queue: later SYNs go unanswered
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(blackhole.getsockname())
            except BlockingIOError:
                pass
            fillers.append(s)
        await asyncio.sleep(0.2)
        dead = f"127.0.0.1:{blackhole.getsockname()[1]}"
        app, port = Scripted(), free_port()
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[http_listener("127.0.0.1", port)]))
        while not server.started:
            await asyncio.sleep(0.01)
        live = f"127.0.0.1:{port}"
        client = ModelServerClient(
            "modelserver.invalid:8000",
            Breakers(10, 60),
            retries=2,
            backoff_s=0.001,
            resolve=static_resolver([dead, live]),
            connect_timeout_s=0.3,
        )
        try:
            await client.endpoints.refresh()
            # Make the dead address the next pick, whatever the sort order put first.
            while client.endpoints.pick().addr != live:
                pass
            t0 = asyncio.get_running_loop().time()
            await _infer(client, budget_s=5.0)
            took = asyncio.get_running_loop().time() - t0
            assert app.calls == 1
            assert took < 2.0, took  # the connect limit (0.3 s), not the 5 s deadline
            for _ in range(3):  # ejected: the next requests go straight to the live one
                await _infer(client, budget_s=5.0)
            assert app.calls == 4
            assert asyncio.get_running_loop().time() - t0 < 3.0
        finally:
            await client.close()
            server.should_exit = True
            await serving
            for s in fillers:
                s.close()
            blackhole.close()

    asyncio.run(scenario())

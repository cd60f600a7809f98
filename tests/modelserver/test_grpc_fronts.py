"""The two gRPC fronts (FLYWHEEL_MODELSERVER_GRPC_FRONT): which one runs, and hostile calls answered alike.

Every test here that takes `server` runs once per front (conftest's `grpc_front`), against the real server
process, with raw gRPC calls (bytes in, bytes out) and raw sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.modelserver.conftest import ROOT, Server, require_front
from tests.modelserver.triton_grpc import service_pb2
from tests.support.credentials import service_env

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIMIT = 4 * 65536 + (1 << 20)  # the fixture's max_request_bytes=65536 → the fronts' message limit


def _raw(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    return channel.unary_unary(method)(payload, timeout=30)


def _refusal(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _raw(channel, method, payload)
    return err.value


def _good_request() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    return request.SerializeToString()


def _serves(server: Server) -> None:
    with server.channel() as channel:
        answer = service_pb2.ModelInferResponse.FromString(_raw(channel, INFER, _good_request()))
    assert answer.model_name == "digits" and len(answer.raw_output_contents[0]) == 10 * 4


def test_the_front_asked_for_is_the_one_serving(server: Server, grpc_front: str) -> None:
    listening = [line for line in server.log.read_text().splitlines() if '"listening"' in line]
    assert listening and re.search(rf'"grpc_front": ?"{grpc_front}"', listening[0]), listening


def test_hostile_calls_are_refused_by_name_and_the_server_keeps_serving(server: Server) -> None:
    with server.channel() as channel:
        garbage = _refusal(channel, INFER, b"\xff\xfe not a protobuf message \x00\x01")
        assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inference.ModelInferRequest" in garbage.details(), garbage.details()

        for unknown in ("/inference.GRPCInferenceService/Nope", "/no.such.Service/Call", "/"):
            assert _refusal(channel, unknown, b"").code() == grpc.StatusCode.UNIMPLEMENTED, unknown

        oversize = _refusal(channel, INFER, b"\0" * (LIMIT + 1))
        assert oversize.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"vs. {LIMIT}" in oversize.details(), oversize.details()

    with grpc.insecure_channel(server.grpc) as anonymous:
        refused = _refusal(anonymous, INFER, _good_request())
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in refused.details()
        # Health needs no credential (kubelet probes carry none).
        check = health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown_service:
            health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert unknown_service.value.code() == grpc.StatusCode.NOT_FOUND
    _serves(server)


def test_non_grpc_traffic_on_the_grpc_port_leaves_the_server_serving(server: Server) -> None:
    host, port = server.grpc.rsplit(":", 1)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for junk in (
        os.urandom(4096),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        preface + b"\x00\x00\x04\x04\x00\x00\x00\x00\x00" + os.urandom(512),  # a SETTINGS frame, then noise
        preface[:10],  # cut off mid-preface
    ):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # The server answers what it will and closes, possibly before all of the junk is sent.
            with contextlib.suppress(OSError):
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
    assert server.proc.poll() is None
    _serves(server)


def _start_up(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The model server's start-up in a real process, which stops at configuration (no model, no socket)."""
    code = f"import sys\n{prelude}\nfrom services.modelserver.__main__ import main\nsys.exit(main([]))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **service_env("modelserver"), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compiled_front_not_built_stops_start_up_naming_the_fix() -> None:
    # The built module is hidden from this one process (an import that fails, as on a checkout without it).
    hidden = "sys.modules['services.modelserver._grpcfront'] = None"
    done = _start_up({"FLYWHEEL_MODELSERVER_GRPC_FRONT": "compiled"}, prelude=hidden)
    assert done.returncode != 0
    assert "FLYWHEEL_MODELSERVER_GRPC_FRONT=compiled" in done.stderr and "make grpcfront" in done.stderr, done.stderr


def test_compiled_front_with_tls_stops_start_up(tmp_path: Path) -> None:
    require_front("compiled")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not read: start-up stops before")
    key.write_text("not read: start-up stops before")
    env = {"FLYWHEEL_MODELSERVER_GRPC_FRONT": "compiled", "FLYWHEEL_TLS_CERT_FILE": str(cert)}
    done = _start_up({**env, "FLYWHEEL_TLS_KEY_FILE": str(key)})
    assert done.returncode != 0 and "serves no TLS" in done.stderr, done.stderr


def _choose(*cases: str, hidden: bool = False) -> list[str]:
    """choose_front(setting, tls) in a fresh process (the test process must not import the server's protos)."""
    hide = "import sys; sys.modules['services.modelserver._grpcfront'] = None\n" if hidden else ""
    calls = ", ".join(f"c({case})" for case in cases)
    code = f"{hide}from services.modelserver.transport.compiled import choose_front as c\nprint({calls})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_auto_picks_aio_when_the_compiled_front_is_not_built() -> None:
    assert _choose("'auto', False", "'auto', True", "'aio', False", hidden=True) == ["aio", "aio", "aio"]


def test_auto_picks_compiled_only_when_built_and_tls_off() -> None:
    require_front("compiled")
    cases = ("'auto', False", "'auto', True", "'aio', False", "'compiled', False")
    assert _choose(*cases) == ["compiled", "aio", "aio", "compiled"]

"""TLS, as the chart turns it on: every service serves HTTP and gRPC with the mounted certificate and calls
the others over TLS, checking them against the mounted CA. Here a model server and a gateway in front
of it, with a CA and a certificate made by openssl for 127.0.0.1."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.ports import free_port
from tests.gateway.models import write_repository
from tests.support.credentials import credentials, service_env
from tests.support.required import require_binary
from tests.support.waiting import wait_until


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost (what cert-manager puts in a Secret)."""
    openssl = require_binary("openssl", "apt-get install openssl")
    files = {name: folder / name for name in ("ca.crt", "ca.key", "tls.crt", "tls.key", "tls.csr", "san.cnf")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=flywheel-test-ca",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(files["tls.key"]), "-out", str(files["tls.csr"]))  # fmt: skip
    run("x509", "-req", "-in", str(files["tls.csr"]), "-CA", str(files["ca.crt"]), "-CAkey", str(files["ca.key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(files["san.cnf"]), "-out", str(files["tls.crt"]))  # fmt: skip
    return files


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT)


def test_services_serve_and_call_each_other_over_tls_when_certificates_are_mounted(tmp_path: Path) -> None:
    files = _certificates(tmp_path)
    tls = {
        "FLYWHEEL_TLS_CERT_FILE": str(files["tls.crt"]),
        "FLYWHEEL_TLS_KEY_FILE": str(files["tls.key"]),
        "FLYWHEEL_TLS_CA_FILE": str(files["ca.crt"]),
    }
    repo = write_repository(tmp_path / "models")
    ms_http, ms_grpc, gw_http, gw_grpc = (free_port() for _ in range(4))
    base = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_LOG_LEVEL": "WARNING", **tls}
    modelserver = _start(
        "services.modelserver",
        {
            **base,
            **service_env("modelserver"),
            "FLYWHEEL_MODELSERVER_MODEL_REPOSITORY": str(repo),
            "FLYWHEEL_MODELSERVER_HTTP_PORT": str(ms_http),
            "FLYWHEEL_MODELSERVER_GRPC_PORT": str(ms_grpc),
        },
        tmp_path / "modelserver.log",
    )
    gateway = _start(
        "services.gateway",
        {
            **base,
            **service_env("gateway"),
            "FLYWHEEL_GATEWAY_EVENTS": "false",
            "FLYWHEEL_GATEWAY_HTTP_PORT": str(gw_http),
            "FLYWHEEL_GATEWAY_GRPC_PORT": str(gw_grpc),
            "FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR": f"127.0.0.1:{ms_http}",
            "FLYWHEEL_GATEWAY_MODEL_REPOSITORY": str(repo),
        },
        tmp_path / "gateway.log",
    )
    verified = httpx.Client(verify=ssl.create_default_context(cafile=str(files["ca.crt"])), timeout=10)
    try:
        # Ready means the gateway reached the model server over TLS with its credential (its probe).
        wait_until(
            lambda: verified.get(f"https://127.0.0.1:{gw_http}/readyz").status_code == 200,
            90,
            proc=gateway,
            message="the gateway ready over TLS",
        )
        key = {"authorization": f"Bearer {credentials().gateway_key}"}
        body = {"instances": [[0.0] * 64]}
        answer = verified.post(f"https://127.0.0.1:{gw_http}/v1/models/digits:predict", json=body, headers=key)
        assert answer.status_code == 200, answer.text
        # Plaintext is not served, and a client that does not trust the CA is refused.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{ms_http}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{ms_http}/healthz", timeout=5)
        creds = grpc.ssl_channel_credentials(root_certificates=files["ca.crt"].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{ms_grpc}", creds) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{ms_grpc}") as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        verified.close()
        for proc in (gateway, modelserver):
            proc.send_signal(signal.SIGTERM)
        for proc in (gateway, modelserver):
            assert proc.wait(60) == 0

"""API keys (missing, wrong, revoked; scopes), per-key rate limits, size limits, no secret in the logs, and no
request smuggled to the model server through a caller's id."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.gateway.conftest import Gateway, ModelServer, auth
from tests.gateway.models import MODEL
from tests.support.waiting import wait_until

BODY = {"instances": [[0.0] * 64]}


def _predict(gw: Gateway, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gw.http_url}/v1/models/{MODEL}:predict", json=BODY, headers=headers)


def _grpc_infer(gw: Gateway, key: str | None, rows: int = 1, method: str = "ModelInfer") -> grpc.StatusCode:
    request: object
    if method == "ModelInfer":
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="features", datatype="FP32", shape=[rows, 64])
        request.raw_input_contents.append(np.zeros((rows, 64), np.float32).tobytes())
    else:
        request = pb.RepositoryIndexRequest()
    md = [("authorization", f"Bearer {key}")] if key else []
    with grpc.insecure_channel(gw.grpc_addr) as channel:
        try:
            getattr(pb_grpc.GRPCInferenceServiceStub(channel), method)(request, metadata=md, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


def _flywheel(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": gw.database_url}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_missing_wrong_and_revoked_keys(gateway: Gateway, keys: dict[str, str]) -> None:
    assert _predict(gateway, {}).status_code == 401
    assert _predict(gateway, auth("not-a-key")).status_code == 401
    good = keys["predict"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert _predict(gateway, auth(forged)).status_code == 401
    assert _predict(gateway, {"Authorization": f"Basic {good}"}).status_code == 401
    assert _predict(gateway, {"X-API-Key": good}).status_code == 200
    assert _grpc_infer(gateway, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_infer(gateway, forged) == grpc.StatusCode.UNAUTHENTICATED

    # A key made with the CLI works, then stops working once revoked (after the key cache expires).
    created = _flywheel(gateway, "create", "--name", "cli", "--scopes", "predict", "--json")
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    key = doc["key"]
    assert _predict(gateway, auth(key)).status_code == 200
    assert _grpc_infer(gateway, key) == grpc.StatusCode.OK
    listed = _flywheel(gateway, "list")
    assert doc["key_id"] in listed.stdout and key not in listed.stdout
    assert _flywheel(gateway, "revoke", doc["key_id"]).returncode == 0
    wait_until(lambda: _predict(gateway, auth(key)).status_code == 401, timeout_s=20, message="revoked key refused")
    assert _grpc_infer(gateway, key) == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in _flywheel(gateway, "list").stdout


def test_scopes_and_admin_never_open(gateway: Gateway, keys: dict[str, str]) -> None:
    url = f"{gateway.http_url}/admin/routes"
    assert httpx.get(url).status_code == 401
    assert httpx.put(f"{url}/{MODEL}", json={"production": "1"}).status_code == 401
    assert httpx.get(url, headers=auth(keys["predict"])).status_code == 403
    assert httpx.put(f"{url}/{MODEL}", json={"production": "1"}, headers=auth(keys["predict"])).status_code == 403
    assert httpx.post(f"{gateway.http_url}/v2/repository/index").status_code == 401
    assert httpx.get(url, headers=auth(keys["admin_only"])).status_code == 200
    assert _predict(gateway, auth(keys["admin_only"])).status_code == 403
    assert _grpc_infer(gateway, keys["admin_only"]) == grpc.StatusCode.PERMISSION_DENIED
    assert _grpc_infer(gateway, keys["predict"], method="RepositoryIndex") == grpc.StatusCode.PERMISSION_DENIED
    assert _grpc_infer(gateway, None, method="RepositoryIndex") == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_infer(gateway, keys["admin_only"], method="RepositoryIndex") == grpc.StatusCode.OK


def test_rate_limit_per_key(gateway: Gateway, keys: dict[str, str]) -> None:
    slow = _flywheel(gateway, "create", "--name", "slow", "--rate", "0.01", "--burst", "3", "--json")
    key = json.loads(slow.stdout)["key"]
    codes = [_predict(gateway, auth(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = _predict(gateway, auth(key))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert _grpc_infer(gateway, key) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Another key is not affected.
    assert _predict(gateway, auth(keys["predict"])).status_code == 200


def test_size_limits(gateway: Gateway, keys: dict[str, str]) -> None:
    big = {"instances": [[0.0] * 64] * 2000}  # > 64 KiB body
    r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=big, headers=auth(keys["predict"]))
    assert r.status_code == 413
    many = {"instances": [[0.0] * 64] * 65}  # under the byte limit, over max_instances
    r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=many, headers=auth(keys["predict"]))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert _grpc_infer(gateway, keys["predict"], rows=400) == grpc.StatusCode.RESOURCE_EXHAUSTED  # 100 KiB message
    assert gateway.proc.poll() is None


def test_no_secret_in_logs(gateway: Gateway, keys: dict[str, str]) -> None:
    for key in keys.values():
        _predict(gateway, auth(key))
        _predict(gateway, auth(key + "x"))
    text = gateway.logs()
    for key in keys.values():
        assert key not in text
        assert key.split("_")[2] not in text


def test_bootstrap_key_from_the_environment_is_registered_and_works(start_gateway) -> None:
    """FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS (how Helm provisions a key) registers it; a malformed one stops the start."""
    key = "fwk_boot0001_" + "s3cret-" * 4
    gw = start_gateway(bootstrap_keys=key)
    assert _predict(gw, auth(key)).status_code == 200
    assert _predict(gw, auth(key[:-1] + "X")).status_code == 401
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": gw.database_url, "FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS": "change-me"}
    env |= {"FLYWHEEL_GATEWAY_HTTP_PORT": "0", "FLYWHEEL_GATEWAY_GRPC_PORT": "0", "FLYWHEEL_GATEWAY_EVENTS": "false"}
    bad = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS" in bad.stderr and "fwk_<id>_<secret>" in bad.stderr


# A caller's id once went unescaped into the HTTP/1.1 head of the gateway's request to the model
# server (issue 15, finding 1): this one would have ended that request and sent a second, an unload.
SMUGGLED = (
    "r1\r\ncontent-length: 0\r\n\r\n"
    f"POST /v2/repository/models/{MODEL}/unload HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}"
)


def _raw_http(gw: Gateway, head: bytes, body: bytes) -> int:
    """One request on a bare socket (httpx refuses to send some of these headers); its status code."""
    host, port = gw.http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_caller_ids_cannot_smuggle_requests_to_the_model_server(
    gateway: Gateway, modelserver: ModelServer, keys: dict[str, str]
) -> None:
    """Ids from the gRPC message, the v2 JSON body, the :predict body and X-Request-Id are refused (400 /
    INVALID_ARGUMENT) unless short plain tokens; the model server is asked nothing: the model stays loaded."""
    key = keys["predict"]
    features = [0.0] * 64
    request = pb.ModelInferRequest(model_name=MODEL, id=SMUGGLED)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    with grpc.insecure_channel(gateway.grpc_addr) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=[("x-api-key", key)], timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request id" in (info.value.details() or "")

    tensor = {"name": "features", "datatype": "FP32", "shape": [1, 64], "data": features}
    with httpx.Client(headers=auth(key), timeout=10) as client:
        r = client.post(f"{gateway.http_url}/v2/models/{MODEL}/infer", json={"id": SMUGGLED, "inputs": [tensor]})
        assert r.status_code == 400 and "request id" in r.json()["error"], r.text
        r = client.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json={"id": SMUGGLED, "instances": [features]})
        assert r.status_code == 400 and "request id" in r.json()["error"], r.text
        r = client.post(f"{gateway.http_url}/v2/models/{MODEL}/infer", json={"id": "x" * 129, "inputs": [tensor]})
        assert r.status_code == 400, r.text

    body = json.dumps({"inputs": [tensor]}).encode()
    for rid in (b"two words", b"caf\xc3\xa9", b"a\x7fb"):
        head = (
            (
                f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\n"
            ).encode()
            + b"X-Request-Id: "
            + rid
            + b"\r\n"
        )
        assert _raw_http(gateway, head, body) == 400, rid

    # Nothing reached the model server but what the gateway meant: every version is still loaded.
    index = httpx.post(
        f"{modelserver.http_url}/v2/repository/index", json={}, headers=modelserver.headers, timeout=10
    ).json()
    assert {row["state"] for row in index if row["name"] == MODEL} == {"READY"}, index
    ready = httpx.get(f"{modelserver.http_url}/v2/models/{MODEL}/ready", headers=modelserver.headers, timeout=10)
    assert ready.status_code == 200
    ok = {"id": "plain-id_1:a/b", "inputs": [tensor]}
    r = httpx.post(f"{gateway.http_url}/v2/models/{MODEL}/infer", json=ok, headers=auth(key), timeout=10)
    assert r.status_code == 200 and r.json()["id"] == "plain-id_1:a/b", r.text

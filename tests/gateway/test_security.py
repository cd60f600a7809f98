"""API keys (missing, wrong, revoked; scopes), per-key rate limits, size limits, and no secret in the logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import httpx
import numpy as np

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.gateway.conftest import Gateway, auth
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

"""Routing: weighted canary split, sticky keys, shadow traffic never visible, automatic rollback of a
failing canary; resilience: deadlines (504) and a circuit breaker in front of an unreachable backend (503)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import httpx
import numpy as np

from services.devstack.ports import free_port
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.gateway.conftest import Gateway, GatewayFactory, auth
from tests.gateway.models import FAILING_VERSION, MODEL, expected_probabilities
from tests.support.waiting import wait_until

SAFE = np.zeros((1, 64), np.float32)  # first feature 0: every version answers
POISON = np.ones((1, 64), np.float32)  # first feature 1: the failing version raises at run time


def set_route(gw: Gateway, key: str, **route: object) -> dict:
    r = httpx.put(f"{gw.http_url}/admin/routes/{MODEL}", json=route, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def _request(features: np.ndarray) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    req.raw_input_contents.append(features.astype(np.float32).tobytes())
    return req


async def _versions(addr: str, key: str, n: int, concurrency: int = 8, sticky: str | None = None) -> Counter[str]:
    md = [("authorization", f"Bearer {key}")] + ([("x-flywheel-sticky-key", sticky)] if sticky else [])
    seen: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                resp = await stub.ModelInfer(_request(SAFE), metadata=md, timeout=10)
                seen[resp.model_version] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


def test_canary_split_follows_weights(gateway: Gateway, keys: dict[str, str]) -> None:
    set_route(gateway, keys["admin"], production="1", canary="2", canary_weight=0.25)
    seen = asyncio.run(_versions(gateway.grpc_addr, keys["predict"], 2000))
    assert sum(seen.values()) == 2000 and set(seen) == {"1", "2"}
    share = seen["2"] / 2000
    assert abs(share - 0.25) < 0.035, seen
    assert gateway.metric("flywheel_gateway_routed_total", model=MODEL, route="canary") >= seen["2"]


def test_sticky_key_keeps_a_caller_on_one_side(gateway: Gateway, keys: dict[str, str]) -> None:
    set_route(gateway, keys["admin"], production="1", canary="2", canary_weight=0.5)
    sides = set()
    for caller in ("alice", "bob", "carol", "dave", "erin", "frank"):
        seen = asyncio.run(_versions(gateway.grpc_addr, keys["predict"], 20, concurrency=2, sticky=caller))
        assert len(seen) == 1, (caller, seen)
        sides |= set(seen)
        headers = {**auth(keys["predict"]), "X-Flywheel-Sticky-Key": caller}
        body = {"instances": [[0.0] * 64]}
        r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=body, headers=headers)
        assert r.json()["model_version"] in seen
    assert sides == {"1", "2"}  # six callers do not all land on one side (fixed hashes)


def test_shadow_is_never_returned(gateway: Gateway, keys: dict[str, str]) -> None:
    set_route(gateway, keys["admin"], production="1", shadow="2")
    before = gateway.metric("flywheel_gateway_shadow_total", model=MODEL, outcome="ok")
    seen = asyncio.run(_versions(gateway.grpc_addr, keys["predict"], 100, concurrency=4))
    assert seen == Counter({"1": 100})
    body = {"instances": [[0.0] * 64]}
    for _ in range(10):
        r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=body, headers=auth(keys["predict"]))
        doc = r.json()
        assert doc["model_version"] == "1"
        probs = [doc["predictions"][0]["probabilities"][str(k)] for k in range(10)]
        np.testing.assert_allclose(probs, expected_probabilities(1, SAFE)[0], rtol=1e-4)
    wait_until(
        lambda: gateway.metric("flywheel_gateway_shadow_total", model=MODEL, outcome="ok") >= before + 110,
        timeout_s=20,
        message="shadow copies answered",
    )


def test_failing_canary_is_rolled_back(gateway: Gateway, keys: dict[str, str]) -> None:
    set_route(gateway, keys["admin"], production="1", canary=str(FAILING_VERSION), canary_weight=0.5)
    codes: Counter[int] = Counter()
    body = {"instances": [POISON[0].tolist()]}
    with httpx.Client(headers=auth(keys["predict"])) as client:
        for _ in range(200):
            r = client.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=body)
            codes[r.status_code] += 1
            assert r.status_code in (200, 502), r.text
            route = client.get(f"{gateway.http_url}/admin/routes/{MODEL}", headers=auth(keys["admin"])).json()
            if not route["canary"]:
                break
    assert route["canary"] == "" and route["production"] == "1", route
    assert codes[502] >= 1
    assert gateway.metric("flywheel_gateway_canary_rollbacks_total", model=MODEL, reason="error_rate") == 1
    with httpx.Client(headers=auth(keys["predict"])) as client:
        for _ in range(20):
            r = client.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=body)
            assert r.status_code == 200 and r.json()["model_version"] == "1"


def test_deadline_is_enforced(gateway: Gateway, keys: dict[str, str]) -> None:
    headers = {**auth(keys["predict"]), "X-Flywheel-Timeout-Ms": "0.001"}
    r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json={"instances": [[0.0] * 64]}, headers=headers)
    assert r.status_code == 504, r.text
    with grpc.insecure_channel(gateway.grpc_addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(_request(SAFE), metadata=[("x-api-key", keys["predict"])], timeout=0.0005)
            raise AssertionError("expected DEADLINE_EXCEEDED")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_backend_opens_the_circuit(start_gateway: GatewayFactory, keys: dict[str, str]) -> None:
    gw = start_gateway(
        probe="healthz",
        modelserver_http_addr=f"127.0.0.1:{free_port()}",
        breaker_failures=3,
    )
    body = {"instances": [[0.0] * 64]}
    with httpx.Client(headers=auth(keys["predict"])) as client:
        r = client.post(f"{gw.http_url}/v2/models/{MODEL}/versions/1/infer", json=_json(SAFE))
        assert r.status_code == 503, r.text
        wait_until(
            lambda: (
                "circuit open"
                in client.post(f"{gw.http_url}/v2/models/{MODEL}/versions/1/infer", json=_json(SAFE)).text
            ),
            timeout_s=20,
            message="circuit open",
        )
        r = client.post(f"{gw.http_url}/v1/models/{MODEL}:predict", json=body)
        assert r.status_code == 503
    assert httpx.get(f"{gw.http_url}/readyz").status_code == 503
    assert gw.metric("flywheel_gateway_circuit_open") >= 1


def _json(features: np.ndarray) -> dict:
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": list(features.shape), "data": features.tolist()}]
    }

"""Predictions through the gateway: friendly :predict (PNG and numbers), KServe v2 REST, gRPC with
tritonclient; malformed bodies and protobufs are answered 4xx / INVALID_ARGUMENT, never 5xx."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest

from services.preprocessing import features_to_png
from tests.gateway.conftest import Gateway, auth
from tests.gateway.models import MODEL, expected_probabilities


def _features(n: int, seed: int = 0) -> np.ndarray:
    """Features exactly representable as PNG grey levels, first feature < 0.1 (safe for every version)."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 256, (n, 64)).astype(np.float32) / 255
    f[:, 0] = 0.0
    return f


def test_friendly_predict_png_and_numbers(gateway: Gateway, keys: dict[str, str]) -> None:
    f = _features(2)
    png = base64.b64encode(features_to_png(f[0])).decode()
    body = {"instances": [png, f[1].tolist()]}
    r = httpx.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", json=body, headers=auth(keys["predict"]))
    assert r.status_code == 200, r.text
    doc = r.json()
    version = int(doc["model_version"])
    want = expected_probabilities(version, f)
    for pred, row in zip(doc["predictions"], want, strict=True):
        assert pred["label"] == str(int(np.argmax(row)))
        got = np.array([pred["probabilities"][str(k)] for k in range(10)])
        np.testing.assert_allclose(got, row, rtol=1e-4, atol=1e-5)


def test_v2_rest_infer_and_metadata(gateway: Gateway, keys: dict[str, str]) -> None:
    f = _features(3, seed=1)
    body = {"id": "r1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 64], "data": f.tolist()}]}
    r = httpx.post(f"{gateway.http_url}/v2/models/{MODEL}/versions/1/infer", json=body, headers=auth(keys["predict"]))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [3, 10]
    np.testing.assert_allclose(np.array(out["data"]).reshape(3, 10), expected_probabilities(1, f), rtol=1e-4)
    meta = httpx.get(f"{gateway.http_url}/v2/models/{MODEL}", headers=auth(keys["predict"]))
    assert meta.status_code == 200 and meta.json()["name"] == MODEL
    assert httpx.get(f"{gateway.http_url}/v2/health/ready").status_code == 200


def test_grpc_with_tritonclient(gateway: Gateway, keys: dict[str, str]) -> None:
    """tritonclient pointed at the gateway (in a process of its own: see tests/gateway/triton_client.py)."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.gateway.triton_client", gateway.grpc_addr, keys["predict"], MODEL, "2", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    features = np.array(doc["features"], np.float32)
    np.testing.assert_allclose(np.array(doc["probabilities"]), expected_probabilities(2, features), rtol=1e-4)
    assert doc["model_version"] == "2" and doc["server_ready"] and doc["metadata_name"] == MODEL
    assert "UNAUTHENTICATED" in doc["without_key"]


BAD_BODIES = [
    b"not json",
    b"{",
    b"[]",
    b'{"instances": []}',
    b'{"instances": "x"}',
    b'{"instances": [[1, 2, 3]]}',
    b'{"instances": [["a"] ]}',
    b'{"instances": ["!!!notbase64"]}',
    b'{"instances": ["aGVsbG8="]}',
    b'{"instances": [{"nope": 1}]}',
    b'{"instances": [' + b",".join([b"2.0"] * 64) + b"]}",
    b'{"instances": [null]}',
]
BAD_INFER = [
    b"{}",
    b'{"inputs": "x"}',
    b'{"inputs": [1]}',
    b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [1]}]}',
    b'{"inputs": [{"name": "features", "datatype": "NOPE", "shape": [1], "data": [1]}]}',
    b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": ["x"]}]}',
    b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
    b'{"inputs": [{"name": "wrong", "datatype": "FP32", "shape": [1, 64], "data": ' + str([0.0] * 64).encode() + b"}]}",
    b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64]}]}',
]


def test_malformed_http_bodies_are_4xx(gateway: Gateway, keys: dict[str, str]) -> None:
    headers = {**auth(keys["predict"]), "content-type": "application/json"}
    with httpx.Client(headers=headers) as client:
        for body in BAD_BODIES:
            r = client.post(f"{gateway.http_url}/v1/models/{MODEL}:predict", content=body)
            assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text)
            assert r.json()["error"]
        for body in BAD_INFER:
            r = client.post(f"{gateway.http_url}/v2/models/{MODEL}/infer", content=body)
            assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text)
        r = client.post(f"{gateway.http_url}/v1/models/nosuchmodel:predict", json={"instances": [[0.0] * 64]})
        assert r.status_code == 404
        r = client.post(f"{gateway.http_url}/v2/models/{MODEL}/versions/x/infer", content=BAD_INFER[3])
        assert 400 <= r.status_code < 500
    assert gateway.proc.poll() is None


def test_malformed_protobufs_are_invalid_argument(gateway: Gateway, keys: dict[str, str]) -> None:
    md = (("authorization", f"Bearer {keys['predict']}"),)
    with grpc.insecure_channel(gateway.grpc_addr) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for raw in (b"\xff\xff\xff", b"\x0a\xff", b"garbage bytes that are not a protobuf", b""):
            with pytest.raises(grpc.RpcError) as info:
                infer(raw, metadata=md, timeout=5)
            assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), raw
        metadata = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        with pytest.raises(grpc.RpcError) as info:
            metadata(b"\xff\xff", metadata=md, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gateway.proc.poll() is None


def test_openapi_documents_the_routes_with_examples(gateway: Gateway) -> None:
    doc = httpx.get(f"{gateway.http_url}/openapi.json").json()
    predict = doc["paths"]["/v1/models/{name}:predict"]["post"]
    assert set(predict["requestBody"]["content"]["application/json"]["examples"]) == {"features", "png"}
    assert "/v2/models/{name}/infer" in doc["paths"] and "/admin/routes/{model}" in doc["paths"]
    assert httpx.get(f"{gateway.http_url}/docs").status_code == 200

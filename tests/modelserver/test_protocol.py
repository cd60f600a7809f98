"""KServe v2 over gRPC and HTTP with unchanged tritonclient clients against the real server process."""

from __future__ import annotations

import math

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from services.oip import rest_codec
from services.oip.errors import ProtocolError
from tests.modelserver.artifacts import expected_probabilities
from tests.modelserver.conftest import Server
from tests.modelserver.triton_grpc import service_pb2, service_pb2_grpc, tgrpc

RNG = np.random.default_rng(7)


def features(rows: int) -> np.ndarray:
    return RNG.random((rows, 64), dtype=np.float32)


def grpc_input(x: np.ndarray, name: str = "features", datatype: str = "FP32") -> tgrpc.InferInput:
    i = tgrpc.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x)
    return i


def http_input(x: np.ndarray, binary: bool = True, name: str = "features") -> thttp.InferInput:
    i = thttp.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


@pytest.fixture(scope="module")
def gclient(server: Server) -> tgrpc.InferenceServerClient:
    return server.grpc_client()


@pytest.fixture(scope="module")
def hclient(server: Server) -> thttp.InferenceServerClient:
    return server.http_client()


def test_grpc_metadata_config_and_raw_infer(gclient: tgrpc.InferenceServerClient, server: Server) -> None:
    assert gclient.is_server_live() and gclient.is_server_ready()
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "model_repository" in gclient.get_server_metadata().extensions
    md = gclient.get_model_metadata("digits")
    assert md.versions == ["1", "2"] and md.platform == "onnxruntime_onnx"
    assert (md.inputs[0].name, md.inputs[0].datatype, list(md.inputs[0].shape)) == ("features", "FP32", [-1, 64])
    assert (md.outputs[0].name, list(md.outputs[0].shape)) == ("probabilities", [-1, 10])
    config = gclient.get_model_config("digits").config
    assert config.max_batch_size == 64 and config.input[0].dims == [64]
    assert config.version_policy.latest.num_versions == 3

    x = features(5)
    result = gclient.infer("digits", [grpc_input(x)])
    assert result.get_response().model_version == "2"  # no version: the newest loaded
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected_probabilities(2, x), rtol=1e-4, atol=1e-6)
    stats = gclient.get_inference_statistics("digits", "2").model_stats[0]
    assert stats.inference_count >= 1 and stats.execution_count >= 1


def test_grpc_explicit_version_routing(gclient: tgrpc.InferenceServerClient) -> None:
    x = features(3)
    for version in ("1", "2"):
        result = gclient.infer("digits", [grpc_input(x)], model_version=version)
        assert result.get_response().model_version == version
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected_probabilities(int(version), x), rtol=1e-4, atol=1e-6
        )
    assert gclient.is_model_ready("digits", "1") and not gclient.is_model_ready("digits", "7")


def test_grpc_typed_contents(server: Server) -> None:
    """A request with typed `contents` (no raw bytes) is answered with typed contents."""
    x = features(2)
    request = service_pb2.ModelInferRequest(model_name="digits", model_version="1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with server.channel() as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert not response.raw_output_contents
    out = np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(list(response.outputs[0].shape))
    np.testing.assert_allclose(out, expected_probabilities(1, x), rtol=1e-4, atol=1e-6)


def test_torchscript_model(gclient: tgrpc.InferenceServerClient, hclient: thttp.InferenceServerClient) -> None:
    x = features(4)
    out = gclient.infer("digits_ts", [grpc_input(x, "INPUT__0")]).as_numpy("OUTPUT__0")
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert hclient.get_model_metadata("digits_ts")["platform"] == "pytorch_libtorch"


def test_http_json_and_binary(hclient: thttp.InferenceServerClient, server: Server) -> None:
    assert hclient.is_server_ready() and hclient.is_model_ready("digits", "2")
    md = hclient.get_model_metadata("digits", "1")
    assert md["versions"] == ["1"] and md["inputs"][0]["shape"] == [-1, 64]
    assert hclient.get_model_config("digits")["max_batch_size"] == 64
    x = features(3)
    for binary, compression in ((True, None), (False, None), (True, "gzip"), (False, "deflate")):
        outputs = [thttp.InferRequestedOutput("probabilities", binary_data=binary)]
        result = hclient.infer(
            "digits",
            [http_input(x, binary)],
            model_version="1",
            outputs=outputs,
            request_compression_algorithm=compression,
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected_probabilities(1, x), rtol=1e-4, atol=1e-6)
    # Plain JSON, as a client without tritonclient would send it.
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": x[0].tolist()}]}
    r = httpx.post(
        f"http://{server.http}/v2/models/digits/versions/2/infer", json=body, headers=server.headers, timeout=10
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == "2" and doc["outputs"][0]["shape"] == [1, 10]
    np.testing.assert_allclose(doc["outputs"][0]["data"], expected_probabilities(2, x[:1]).ravel(), rtol=1e-4)
    assert hclient.get_inference_statistics("digits")["model_stats"]


def test_repository_index_policies_load_unload(
    gclient: tgrpc.InferenceServerClient, hclient: thttp.InferenceServerClient
) -> None:
    index = {(m["name"], m.get("version", "")): m["state"] for m in hclient.get_model_repository_index()}
    assert index[("pinned", "1")] == "READY" and index[("pinned", "3")] == "READY"
    assert ("pinned", "2") not in index  # version_policy specific [1, 3]
    assert [v for (n, v) in index if n == "newest"] == ["3"]  # latest 1

    gclient.unload_model("digits_ts")
    assert not gclient.is_model_ready("digits_ts")
    with pytest.raises(InferenceServerException) as err:
        gclient.infer("digits_ts", [grpc_input(features(1), "INPUT__0")])
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    states = {m.name: m.state for m in gclient.get_model_repository_index().models}
    assert states["digits_ts"] == "UNAVAILABLE"
    hclient.load_model("digits_ts")
    assert hclient.is_model_ready("digits_ts")
    assert gclient.infer("digits_ts", [grpc_input(features(1), "INPUT__0")]).as_numpy("OUTPUT__0").shape == (1, 10)


def test_load_refusals_name_the_problem(gclient: tgrpc.InferenceServerClient, server: Server) -> None:
    err = _grpc_error(lambda: gclient.load_model("digits", config='{"max_batch_size": 8}'))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "config" in err.message()
    broken = server.repo / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        (server.repo / "newest" / "config.pbtxt").read_text().replace("newest", "broken")
    )
    (broken / "1" / "model.onnx").write_bytes(b"not an onnx model")
    err = _grpc_error(lambda: gclient.load_model("broken"))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "onnxruntime could not load" in err.message()
    states = {m.name: (m.state, m.reason) for m in gclient.get_model_repository_index().models}
    assert states["broken"][0] == "UNAVAILABLE" and "could not load" in states["broken"][1]
    (broken / "config.pbtxt").write_text("name: broken\nmax_batch_size: -1")
    err = _grpc_error(lambda: gclient.load_model("broken"))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "config.pbtxt" in err.message()
    assert gclient.infer("digits", [grpc_input(features(1))]).as_numpy("probabilities").shape == (1, 10)


def _grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value


def _raw_request(server: Server, request: service_pb2.ModelInferRequest) -> grpc.RpcError:
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return err.value


def test_grpc_bad_input_is_named_and_server_keeps_serving(gclient: tgrpc.InferenceServerClient, server: Server) -> None:
    x = features(2)
    cases = [
        (lambda: gclient.infer("nope", [grpc_input(x)]), "StatusCode.NOT_FOUND", "nope"),
        (lambda: gclient.infer("digits", [grpc_input(x)], model_version="9"), "StatusCode.NOT_FOUND", "version"),
        (lambda: gclient.infer("digits", [grpc_input(x, "pixels")]), "StatusCode.INVALID_ARGUMENT", "'pixels'"),
        (
            lambda: gclient.infer("digits", [grpc_input(x.astype(np.float64), datatype="FP64")]),
            "StatusCode.INVALID_ARGUMENT",
            "expected FP32",
        ),
        (lambda: gclient.infer("digits", [grpc_input(x[:, :60])]), "StatusCode.INVALID_ARGUMENT", "[-1, 64]"),
        (lambda: gclient.infer("digits", [grpc_input(features(65))]), "StatusCode.INVALID_ARGUMENT", "max_batch_size"),
        # 300 x 64 x 4 bytes is over the server's 64 KiB limit.
        (lambda: gclient.infer("digits", [grpc_input(features(300))]), "StatusCode.INVALID_ARGUMENT", "over the limit"),
    ]
    for call, status, text in cases:
        err = _grpc_error(call)
        assert err.status() == status, err
        assert text in err.message(), err.message()
        if status == "StatusCode.INVALID_ARGUMENT":
            assert "features" in err.message() or "pixels" in err.message()

    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="features", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(b"\0" * (2 * 64 * 4 - 4))
    err = _raw_request(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'features'" in err.details() and "expected 512" in err.details()

    assert gclient.infer("digits", [grpc_input(x)]).as_numpy("probabilities").shape == (2, 10)


def test_json_bodies_with_non_finite_tokens_decode_like_finite_ones() -> None:
    """A body holding NaN takes a different parser than one without (services/oip/rest_codec.py): both must read
    the same request. FP64 values exactly (no parser shortcut on the last digit), ids and strings holding the
    token, and a nesting depth past that parser's limit refused as a ProtocolError."""
    values = np.random.default_rng(11).standard_normal(64) * 10.0 ** np.arange(-32, 32)
    data = ",".join(repr(float(v)) for v in values)
    finite = '{"id":"NaN-or-Infinity","inputs":[{"name":"x","datatype":"FP64","shape":[1,64],"data":[' + data + "]}]}"
    with_nan = finite.replace("[" + repr(float(values[0])), "[NaN", 1)
    a, _ = rest_codec.decode_request("m", "", finite.encode(), {}, 1 << 20, 1 << 22)
    b, _ = rest_codec.decode_request("m", "", with_nan.encode(), {}, 1 << 20, 1 << 22)
    assert a.id == b.id == "NaN-or-Infinity"
    assert a.inputs["x"].dtype == np.float64 and np.array_equal(a.inputs["x"][0], values)
    assert math.isnan(b.inputs["x"][0, 0]) and np.array_equal(b.inputs["x"][0, 1:], values[1:])
    deep = '{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[NaN,' + "[" * 300 + "]" * 300 + "]}]}"
    with pytest.raises(ProtocolError, match="not valid JSON"):
        rest_codec.decode_request("m", "", deep.encode(), {}, 1 << 20, 1 << 22)


def test_http_json_non_finite_floats_as_triton_writes(hclient: thttp.InferenceServerClient, server: Server) -> None:
    """NaN, Infinity and -Infinity: the tokens Triton's JSON (and perf_analyzer's random FP32 data) use.
    Seen: perf_analyzer's JSON mode failed every CNN request ("not valid JSON") before these were read."""
    data = ["NaN", "Infinity", "-Infinity"] + ["0.5"] * 61
    body = '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,64],"data":[' + ",".join(data) + "]}]}"
    r = httpx.post(
        f"http://{server.http}/v2/models/digits/versions/1/infer",
        content=body.encode(),
        headers={**server.headers, "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]  # NaN comes back as NaN (json reads the token), never as null
    assert out["shape"] == [1, 10] and len(out["data"]) == 10 and all(isinstance(v, float) for v in out["data"])
    assert any(math.isnan(v) for v in out["data"]) and b"null" not in r.content
    # The same through tritonclient's JSON tensors, both ways.
    x = features(1)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    outputs = [thttp.InferRequestedOutput("probabilities", binary_data=False)]
    result = hclient.infer("digits", [http_input(x, False)], model_version="1", outputs=outputs)
    assert np.isnan(result.as_numpy("probabilities")).any()
    # Still JSON only: a body that is not JSON, NaN in it or not, is a 400 naming the problem.
    # Nested past any parser's depth, with a NaN so that the parser for such bodies is the one that meets it.
    deep = (
        '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,64],"data":[NaN,' + "[" * 5000 + "]" * 5000 + "]}]}"
    )
    for broken in (body[:-3], body.replace("NaN", "NaNa"), deep):
        r = httpx.post(
            f"http://{server.http}/v2/models/digits/versions/1/infer",
            content=broken.encode(),
            headers={**server.headers, "content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"], r.text


def test_http_bad_input_statuses(server: Server) -> None:
    url = f"http://{server.http}/v2/models"
    good = {"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    cases = [
        (f"{url}/nope/infer", {"inputs": [good]}, 404),
        (f"{url}/digits/versions/9/infer", {"inputs": [good]}, 404),
        (f"{url}/digits/infer", {"inputs": [{**good, "name": "pixels"}]}, 400),
        (f"{url}/digits/infer", {"inputs": [{**good, "datatype": "INT32", "data": [0] * 64}]}, 400),
        (f"{url}/digits/infer", {"inputs": [{**good, "shape": [1, 63], "data": [0.0] * 63}]}, 400),
        (f"{url}/digits/infer", {"inputs": [{**good, "data": [0.0] * 10}]}, 400),
        (f"{url}/digits/infer", {"inputs": [{**good, "shape": [300, 64], "data": [0.0] * 300 * 64}]}, 400),
        (f"{url}/digits/infer", {"inputs": "nope"}, 400),
    ]
    for target, body, status in cases:
        r = httpx.post(target, json=body, headers=server.headers, timeout=10)
        assert r.status_code == status, (target, body.get("inputs"), r.text)
        assert r.json()["error"]
    r = httpx.post(
        f"{url}/digits/infer", json={"inputs": [{**good, "data": [0.0] * 10}]}, headers=server.headers, timeout=10
    )
    assert "'features'" in r.json()["error"] and "expected 64" in r.json()["error"]
    assert (
        httpx.post(f"{url}/digits/infer", json={"inputs": [good]}, headers=server.headers, timeout=10).status_code
        == 200
    )


def test_expired_deadline_is_answered_before_compute(
    gclient: tgrpc.InferenceServerClient, hclient: thttp.InferenceServerClient, server: Server
) -> None:
    before = server.metric("flywheel_modelserver_expired_total", model="newest", version="3")
    # Triton's `timeout` parameter is in microseconds: 1 us has passed before the request is queued.
    err = _grpc_error(lambda: gclient.infer("newest", [grpc_input(features(1))], timeout=1))
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED"
    with pytest.raises(InferenceServerException) as http_err:
        hclient.infer("newest", [http_input(features(1))], timeout=1)
    assert http_err.value.status() == "504"
    # The deadline as a header (how the gateway passes on its remaining budget): 0.001 ms has passed too.
    good = {"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    url = f"http://{server.http}/v2/models/newest/versions/3/infer"
    r = httpx.post(
        url, json={"inputs": [good]}, headers={**server.headers, "x-flywheel-timeout-ms": "0.001"}, timeout=10
    )
    assert r.status_code == 504, r.text
    for bad in ("soon", "-5", "0"):
        r = httpx.post(
            url, json={"inputs": [good]}, headers={**server.headers, "x-flywheel-timeout-ms": bad}, timeout=10
        )
        assert r.status_code == 400 and "X-Flywheel-Timeout-Ms" in r.json()["error"]
    assert (
        httpx.post(
            url, json={"inputs": [good]}, headers={**server.headers, "x-flywheel-timeout-ms": "30000"}
        ).status_code
        == 200
    )
    assert server.metric("flywheel_modelserver_expired_total", model="newest", version="3") == before + 3
    assert gclient.infer("newest", [grpc_input(features(1))], client_timeout=30).as_numpy("probabilities") is not None

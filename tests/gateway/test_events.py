"""The gateway on a real broker: every answered prediction logged (none lost under the queue bound,
drops counted above it), a rolled-back canary published as archived, aliases moved by ModelPublished."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf.message import DecodeError

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.events.codec import new_meta
from services.events.topics import MODELS, PREDICTIONS
from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.gateway.conftest import Gateway, GatewayFactory, auth
from tests.gateway.models import FAILING_VERSION, MODEL
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def kgateway(start_gateway: GatewayFactory, kafka: Broker) -> Gateway:
    return start_gateway(bootstrap=kafka.bootstrap, rollback_min_requests=10)


def _logs(bootstrap: str, prefix: str, want: int, timeout_s: float = 60) -> dict[str, ev.PredictionLog]:
    found: dict[str, ev.PredictionLog] = {}
    done = [0]

    def collect(msgs: list) -> bool:
        for m in msgs[done[0] :]:
            try:
                log = ev.PredictionLog.FromString(m.value())
            except DecodeError:  # the broker is shared: another module's malformed event (the monitor's tests)
                continue
            if log.request_id.startswith(prefix):
                found[log.request_id] = log
        done[0] = len(msgs)
        return len(found) >= want

    read_topic(bootstrap, PREDICTIONS.name, want=10**9, timeout_s=timeout_s, stop_when=collect)
    return found


async def _infer_many(addr: str, key: str, prefix: str, n: int, concurrency: int = 8) -> int:
    ok = 0
    features = np.zeros((1, 64), np.float32)
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        todo = iter(range(n))

        async def worker() -> None:
            nonlocal ok
            for i in todo:
                req = pb.ModelInferRequest(model_name=MODEL, model_version="1", id=f"{prefix}{i}")
                req.inputs.add(name="features", datatype="FP32", shape=[1, 64])
                req.raw_input_contents.append(features.tobytes())
                await stub.ModelInfer(req, metadata=[("x-api-key", key)], timeout=10)
                ok += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def test_every_prediction_is_logged_below_the_bound(kgateway: Gateway, kafka: Broker, keys: dict[str, str]) -> None:
    prefix = f"log-{uuid.uuid4().hex[:8]}-"
    n = 400
    assert asyncio.run(_infer_many(kgateway.grpc_addr, keys["predict"], prefix, n)) == n
    found = _logs(kafka.bootstrap, prefix, n)
    assert len(found) == n
    key_id = keys["predict"].split("_")[1]
    sample = found[f"{prefix}0"]
    assert sample.model == MODEL and sample.model_version == "1" and sample.route == "production"
    assert len(sample.input_features) == 64 and len(sample.output_scores) == 10
    assert sample.key_id == key_id and sample.latency_ms > 0 and sample.meta.event_id
    assert sample.predicted_label == str(int(np.argmax(sample.output_scores)))
    assert kgateway.metric("flywheel_gateway_prediction_logs_total", outcome="dropped") == 0


def test_a_full_queue_drops_and_counts(start_gateway: GatewayFactory, kafka: Broker, keys: dict[str, str]) -> None:
    gw = start_gateway(bootstrap=kafka.bootstrap, log_queue_bound=4)
    prefix = f"drop-{uuid.uuid4().hex[:8]}-"
    requests, per_request = 20, 64
    with httpx.Client(headers=auth(keys["predict"])) as client:
        for i in range(requests):
            body = {"id": f"{prefix}{i}", "instances": [[0.0] * 64] * per_request}
            r = client.post(f"{gw.http_url}/v1/models/{MODEL}:predict", json=body)
            assert r.status_code == 200, r.text  # a full log queue never fails a prediction
    total = requests * per_request

    def outcomes() -> tuple[float, float]:
        logged = gw.metric("flywheel_gateway_prediction_logs_total", outcome="logged")
        dropped = gw.metric("flywheel_gateway_prediction_logs_total", outcome="dropped")
        return logged, dropped

    wait_until(lambda: sum(outcomes()) == total, timeout_s=60, message="every log logged or dropped")
    logged, dropped = outcomes()
    assert dropped > 0 and logged > 0
    assert gw.metric("flywheel_gateway_prediction_logs_total", outcome="failed") == 0
    found = _logs(kafka.bootstrap, prefix, int(logged))
    assert len(found) == logged


def test_rollback_publishes_archived(kgateway: Gateway, kafka: Broker, keys: dict[str, str]) -> None:
    r = httpx.put(
        f"{kgateway.http_url}/admin/routes/{MODEL}",
        json={"production": "1", "canary": str(FAILING_VERSION), "canary_weight": 0.5},
        headers=auth(keys["admin"]),
    )
    assert r.status_code == 200
    body = {"instances": [[1.0] * 64]}
    with httpx.Client(headers=auth(keys["predict"])) as client:

        def rolled_back() -> bool:
            client.post(f"{kgateway.http_url}/v1/models/{MODEL}:predict", json=body)
            return kgateway.metric("flywheel_gateway_canary_rollbacks_total", model=MODEL) == 1

        wait_until(rolled_back, timeout_s=60, message="canary rolled back")

    def archived(msgs: list) -> bool:
        return any(
            (e := ev.ModelPublished.FromString(m.value())).stage == "archived"
            and e.version == str(FAILING_VERSION)
            and e.meta.source == "gateway"
            for m in msgs
        )

    msgs = read_topic(kafka.bootstrap, MODELS.name, want=10**9, timeout_s=30, stop_when=archived)
    assert archived(msgs)


def test_model_events_move_aliases(kgateway: Gateway, kafka: Broker, keys: dict[str, str]) -> None:
    producer = EventProducer(kafka.bootstrap, client_id="test")

    def publish(version: str, stage: str) -> None:
        producer.send(
            MODELS.name, ev.ModelPublished(meta=new_meta("trainer"), model=MODEL, version=version, stage=stage)
        )
        producer.flush()

    def route() -> dict:
        return httpx.get(f"{kgateway.http_url}/admin/routes/{MODEL}", headers=auth(keys["admin"])).json()

    publish("2", "canary")
    wait_until(lambda: route()["canary"] == "2", timeout_s=30, message="canary alias from event")
    assert route()["canary_weight"] > 0
    publish("2", "production")
    wait_until(lambda: route()["production"] == "2", timeout_s=30, message="production alias from event")
    assert route()["canary"] == ""


def test_rest_predictions_json_and_binary_are_logged_with_their_tensors(
    kgateway: Gateway, kafka: Broker, keys: dict[str, str]
) -> None:
    """v2 REST passes bodies on as they are (JSON or Triton's binary extension); the log still has the tensors."""
    prefix = f"rest-{uuid.uuid4().hex[:8]}-"
    rng = np.random.default_rng(3)
    sent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    url = f"{kgateway.http_url}/v2/models/{MODEL}/versions/1/infer"
    with httpx.Client(headers=auth(keys["predict"]), timeout=10) as client:
        for i in range(10):
            f = rng.random((1, 64), dtype=np.float32)
            f[0, 0] = 0.0
            rid = f"{prefix}json{i}"
            doc = {
                "id": rid,
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": f.tolist()}],
            }
            r = client.post(url, json=doc)
            assert r.status_code == 200, r.text
            scores = np.array(r.json()["outputs"][0]["data"], np.float32)
            sent[rid] = (f.ravel(), scores)
        for i in range(10):
            f = rng.random((1, 64), dtype=np.float32)
            f[0, 0] = 0.0
            rid = f"{prefix}bin{i}"
            head = json.dumps(
                {
                    "id": rid,
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "FP32",
                            "shape": [1, 64],
                            "parameters": {"binary_data_size": 256},
                        }
                    ],
                    "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
                }
            ).encode()
            r = client.post(
                url,
                content=head + f.tobytes(),
                headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))},
            )
            assert r.status_code == 200, r.text
            split = int(r.headers["inference-header-content-length"])
            assert json.loads(r.content[:split])["outputs"][0]["parameters"]["binary_data_size"] == 40
            sent[rid] = (f.ravel(), np.frombuffer(r.content[split:], np.float32))
    found = _logs(kafka.bootstrap, prefix, len(sent))
    assert set(found) == set(sent)
    for rid, (features, scores) in sent.items():
        log = found[rid]
        assert log.route == "production" and log.model_version == "1"
        np.testing.assert_allclose(np.array(log.input_features), features, rtol=1e-6)
        np.testing.assert_allclose(np.array(log.output_scores), scores, rtol=1e-6)


def test_synthetic_traffic_is_marked_in_the_prediction_log(
    kgateway: Gateway, kafka: Broker, keys: dict[str, str]
) -> None:
    """`X-Flywheel-Synthetic` (HTTP) and `x-flywheel-synthetic` (gRPC metadata) mark load-test traffic in
    the log, on every inference route; unmarked traffic is production; a bad value is a 400."""
    prefix = f"syn-{uuid.uuid4().hex[:8]}-"
    features = [0.0] * 64
    v2 = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": features}]}
    with httpx.Client(headers=auth(keys["predict"]), timeout=10) as client:
        for synthetic in (True, False):
            tag = "s" if synthetic else "p"
            headers = {"X-Flywheel-Synthetic": "true"} if synthetic else {}
            r = client.post(
                f"{kgateway.http_url}/v1/models/{MODEL}:predict",
                json={"id": f"{prefix}predict-{tag}", "instances": [features]},
                headers=headers,
            )
            assert r.status_code == 200, r.text
            r = client.post(
                f"{kgateway.http_url}/v2/models/{MODEL}/versions/1/infer",
                json={"id": f"{prefix}v2-{tag}", **v2},
                headers=headers,
            )
            assert r.status_code == 200, r.text
        bad = client.post(
            f"{kgateway.http_url}/v1/models/{MODEL}:predict",
            json={"instances": [features]},
            headers={"X-Flywheel-Synthetic": "maybe"},
        )
        assert bad.status_code == 400 and "X-Flywheel-Synthetic" in bad.json()["error"]

    async def grpc_calls() -> None:
        async with grpc.aio.insecure_channel(kgateway.grpc_addr) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for synthetic in (True, False):
                req = pb.ModelInferRequest(
                    model_name=MODEL, model_version="1", id=f"{prefix}grpc-{'s' if synthetic else 'p'}"
                )
                req.inputs.add(name="features", datatype="FP32", shape=[1, 64])
                req.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
                metadata = [("x-api-key", keys["predict"])] + ([("x-flywheel-synthetic", "1")] if synthetic else [])
                await stub.ModelInfer(req, metadata=metadata, timeout=10)

    asyncio.run(grpc_calls())
    found = _logs(kafka.bootstrap, prefix, 6)
    assert {rid: log.synthetic for rid, log in found.items()} == {
        f"{prefix}{route}-{tag}": tag == "s" for route in ("predict", "v2", "grpc") for tag in ("s", "p")
    }

"""The server under bounded concurrent load: shedding, hot swap (repository API and Kafka event), drain."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
from tritonclient.utils import InferenceServerException

from services.devstack.brokers import Broker
from services.events import EventProducer
from services.events.codec import decode, new_meta
from services.events.topics import DEADLETTER, MODELS
from services.genproto.flywheel.v1 import events_pb2 as ev
from tests.modelserver.artifacts import add_onnx_version, expected_probabilities, write_onnx_model
from tests.modelserver.conftest import FRONTS, Server, require_front, running_server
from tests.modelserver.triton_grpc import service_pb2, service_pb2_grpc, tgrpc
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_until

LONG_SLO_MS = 60000  # these tests are about shedding and swapping, not about deadlines on a busy CI box


def _features(seed: int, rows: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 64), dtype=np.float32)


def _infer(client: tgrpc.InferenceServerClient, model: str, x: np.ndarray) -> tgrpc.InferResult:
    i = tgrpc.InferInput("features", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return client.infer(model, [i], client_timeout=60)


@pytest.mark.parametrize("front", FRONTS)
def test_full_queue_is_refused_with_a_retry_hint(tmp_path: Path, front: str) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "slow", [1], slow=True)  # ~1 GFLOP per execution, one instance
    settings = {"queue_bound": 1, "default_slo_ms": LONG_SLO_MS, "batching": "off", "grpc_front": require_front(front)}
    with running_server(repo, tmp_path, **settings) as server:
        clients = 16
        barrier = threading.Barrier(clients)
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}

        def http_call(_: int) -> httpx.Response:
            with httpx.Client(timeout=60, headers=server.headers) as client:
                barrier.wait()
                return client.post(f"http://{server.http}/v2/models/slow/infer", json=body)

        with ThreadPoolExecutor(clients) as pool:
            responses = list(pool.map(http_call, range(clients)))
        codes = Counter(r.status_code for r in responses)
        assert set(codes) <= {200, 429} and codes[429] >= 1 and codes[200] >= 1, codes
        refused = next(r for r in responses if r.status_code == 429)
        # RFC 9110 Retry-After (whole seconds, at least 1) and the precise hint in milliseconds.
        assert int(refused.headers["Retry-After"]) >= 1 and int(refused.headers["Retry-After-Ms"]) >= 1
        error = refused.json()["error"]
        assert "model 'slow' v1: queue full (1 requests waiting" in error and "retry after" in error, error

        barrier.reset()
        x = np.full((1, 64), 0.5, np.float32)

        def grpc_call(_: int) -> tuple[str, str | None]:
            request = service_pb2.ModelInferRequest(model_name="slow")
            request.inputs.add(name="features", datatype="FP32", shape=[1, 64])
            request.raw_input_contents.append(x.tobytes())
            with server.channel() as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                barrier.wait()
                try:
                    stub.ModelInfer(request)  # no deadline
                    return "OK", None
                except grpc.RpcError as exc:
                    trailers = dict(exc.trailing_metadata() or ())
                    return exc.code().name, trailers.get("retry-after-ms")

        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(grpc_call, range(clients)))
        statuses = Counter(code for code, _ in answers)
        assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED"} and statuses["RESOURCE_EXHAUSTED"] >= 1, statuses
        assert all(hint is not None and int(hint) >= 1 for code, hint in answers if code == "RESOURCE_EXHAUSTED")
        assert server.metric("flywheel_modelserver_shed_total", model="slow", version="1") >= 2
        # Refusing is not failing: the server stays ready and serves the next request.
        assert httpx.get(f"http://{server.http}/readyz", timeout=5).status_code == 200
        assert _infer(server.grpc_client(), "slow", _features(2, 1)).as_numpy("probabilities") is not None


class Load:
    """Closed-loop clients on their own threads until enough answers came from the new version (bounded)."""

    def __init__(self, server: Server, model: str, new_version: str, clients: int = 6, min_total: int = 300) -> None:
        self._server, self._model, self._new = server, model, new_version
        self._clients, self._min_total, self._max_total = clients, min_total, 5000
        self._lock = threading.Lock()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.total = 0
        self.started = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _done(self) -> bool:
        return self.total >= self._max_total or (self.total >= self._min_total and self.versions[self._new] >= 50)

    def _run(self, seed: int) -> None:
        client = self._server.grpc_client()
        try:
            while True:
                with self._lock:
                    if self._done() or len(self.failures) > 20:
                        return
                x = _features(seed * 100000 + self.total)
                try:
                    result = _infer(client, self._model, x)
                    version = result.get_response().model_version
                    np.testing.assert_allclose(
                        result.as_numpy("probabilities"), expected_probabilities(int(version), x), rtol=1e-4, atol=1e-6
                    )
                except (InferenceServerException, AssertionError) as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.versions[version] += 1
                    self.total += 1
                    if self.total >= 50:
                        self.started.set()
        finally:
            client.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._threads:
            t.join(timeout=300)
        self.started.set()


def _swap_under_load(server: Server, repo: Path, trigger) -> None:
    with Load(server, "digits", new_version="2") as load:
        assert load.started.wait(120), f"load did not start: {load.failures[:3]}"
        add_onnx_version(repo, "digits", 2)
        trigger()
    assert not load.failures, load.failures[:5]
    assert load.versions["1"] >= 50 and load.versions["2"] >= 50, load.versions
    index = {(m.name, m.version): m.state for m in server.grpc_client().get_model_repository_index().models}
    assert index == {("digits", "2"): "READY"}  # latest 1: version 1 retired after the swap


def test_hot_swap_under_load_via_repository_api(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "digits", [1], num_versions=1)
    with running_server(repo, tmp_path, default_slo_ms=LONG_SLO_MS) as server:
        admin = server.grpc_client()
        _swap_under_load(server, repo, lambda: admin.load_model("digits"))


def test_hot_swap_under_load_via_model_published_event(tmp_path: Path, kafka: Broker) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "digits", [1], num_versions=1)
    with running_server(
        repo, tmp_path, default_slo_ms=LONG_SLO_MS, consume_model_events="true", kafka_bootstrap=kafka.bootstrap
    ) as server:
        producer = EventProducer(kafka.bootstrap, client_id="test-trainer")

        def publish() -> None:
            event = ev.ModelPublished(
                meta=new_meta("test"),
                model="digits",
                version="2",
                stage="production",
                repository_uri=repo.as_uri(),
                platform="onnxruntime_onnx",
            )
            producer.send(MODELS.name, event)
            producer.flush()
            client = server.grpc_client()
            wait_until(lambda: client.is_model_ready("digits", "2"), timeout_s=120, proc=server.proc, message="v2")

        _swap_under_load(server, repo, publish)

        # A version that is present but cannot be loaded is dead-lettered with the reason; v2 keeps serving.
        (repo / "digits" / "3").mkdir()
        (repo / "digits" / "3" / "model.onnx").write_bytes(b"not an onnx model")
        event = ev.ModelPublished(meta=new_meta("test"), model="digits", version="3", stage="production")
        producer.send(MODELS.name, event)
        producer.flush()

        def letter_for_v3(records: list) -> bool:
            return any(b"digits v3" in decode(DEADLETTER.name, r.value()).reason.encode() for r in records)

        letters = read_topic(kafka.bootstrap, DEADLETTER.name, want=10_000, timeout_s=90, stop_when=letter_for_v3)
        assert letter_for_v3(letters)
        result = _infer(server.grpc_client(), "digits", _features(3))
        assert result.get_response().model_version == "2"


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_onnx_model(repo, "slow", [1], slow=True)
    with running_server(repo, tmp_path, default_slo_ms=LONG_SLO_MS, batching="off") as server:
        clients = 12  # a queue that lasts ~12 executions: long enough for a scrape to see it on a busy machine
        grpc_clients = [server.grpc_client() for _ in range(clients)]
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(_infer, c, "slow", _features(i, 1)) for i, c in enumerate(grpc_clients)]
            wait_until(
                lambda: server.metric("flywheel_modelserver_queue_depth", model="slow", version="1") >= 2,
                timeout_s=60,
                message="requests queued",
            )
            assert server.stop() == 0
            results = [f.result(timeout=120) for f in futures]
        assert all(r.as_numpy("probabilities").shape == (1, 10) for r in results)
        assert "stopped" in server.log.read_text()


def test_a_server_behind_its_event_loop_refuses_before_parsing(tmp_path: Path) -> None:
    """Past capacity over HTTP the backlog is in socket buffers, where no queue bound sees it: the server
    refuses new requests with 429 and a retry hint while its event loop runs late (MAX_LOOP_LAG_MS, 0.2 ms
    here so that JSON bodies from a few clients make it late on any machine), answers the rest, and serves
    normally once the flood stops."""
    repo = tmp_path / "models"
    write_onnx_model(repo, "digits", [1])
    settings = {"max_loop_lag_ms": 0.2, "default_slo_ms": LONG_SLO_MS}
    rows = np.random.default_rng(3).random((64, 64), dtype=np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [64, 64], "data": rows.ravel().tolist()}]}
    )
    with running_server(repo, tmp_path, **settings) as server:
        url = f"http://{server.http}/v2/models/digits/infer"
        headers = {**server.headers, "content-type": "application/json"}
        refused: list[httpx.Response] = []
        codes: Counter[int] = Counter()
        lock = threading.Lock()

        def flood(_: int) -> None:
            with httpx.Client(timeout=60, headers=headers) as client:
                for _ in range(400):
                    r = client.post(url, content=body)
                    with lock:
                        codes[r.status_code] += 1
                        if r.status_code == 429:
                            refused.append(r)
                            if len(refused) >= 5:
                                return

        flooding = threading.Event()
        flooding.set()
        grpc_codes: Counter[str] = Counter()
        hints: list[str | None] = []

        def grpc_calls() -> None:  # the gRPC side of the same server: refused alike while it is behind
            request = service_pb2.ModelInferRequest(model_name="digits")
            request.inputs.add(name="features", datatype="FP32", shape=[1, 64])
            request.raw_input_contents.append(rows[:1].tobytes())
            with server.channel() as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                for _ in range(2000):
                    if not flooding.is_set():
                        return
                    try:
                        stub.ModelInfer(request, timeout=60)
                        grpc_codes["OK"] += 1
                    except grpc.RpcError as exc:
                        grpc_codes[exc.code().name] += 1
                        hints.append(dict(exc.trailing_metadata() or ()).get("retry-after-ms"))

        with ThreadPoolExecutor(9) as pool:
            caller = pool.submit(grpc_calls)
            list(pool.map(flood, range(8)))
            flooding.clear()
            caller.result()
        assert set(codes) <= {200, 429} and codes[429] >= 1 and codes[200] >= 1, codes
        assert set(grpc_codes) <= {"OK", "RESOURCE_EXHAUSTED"}, grpc_codes
        assert grpc_codes["RESOURCE_EXHAUSTED"] >= 1 and all(h is not None and int(h) >= 1 for h in hints), grpc_codes
        first = refused[0]
        assert int(first.headers["Retry-After"]) >= 1 and int(first.headers["Retry-After-Ms"]) >= 1
        error = first.json()["error"]
        assert "event loop runs" in error and "FLYWHEEL_MODELSERVER_MAX_LOOP_LAG_MS=0.2" in error, error
        counted = server.metric("flywheel_modelserver_loop_behind_refused_total")
        assert counted >= codes[429], (counted, codes)
        # Once the flood stops the loop catches up and the next request is answered (not refused).
        wait_until(
            lambda: httpx.post(url, content=body, headers=headers, timeout=30).status_code == 200,
            timeout_s=30,
            message="a request answered after the flood",
        )
        answer = httpx.post(url, content=body, headers=headers, timeout=30).json()["outputs"][0]
        np.testing.assert_allclose(
            np.array(answer["data"], np.float32).reshape(64, 10), expected_probabilities(1, rows), rtol=1e-4, atol=1e-6
        )

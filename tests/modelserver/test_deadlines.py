"""Deadlines over both transports, against the real server with a stalled model.

A request without a client deadline is held to the model's SLO only softly: a stall makes it
late, never failed, over REST exactly as over gRPC. A client deadline (the `timeout` parameter,
X-Flywheel-Timeout-Ms) stays hard: past it while queued, the request is not computed and is
answered 504 / DEADLINE_EXCEEDED.

The stall: the "slow" test model spends ~1 GFLOP per execution (tens of milliseconds here)
against an SLO of 1 ms, on one instance, so every request that queues misses its SLO.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tests.modelserver.artifacts import write_onnx_model
from tests.modelserver.conftest import Server, running_server
from tests.modelserver.triton_grpc import tgrpc
from tests.support.waiting import wait_until

SLO_MS = 1  # far below one execution of the slow model
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory, grpc_front: str) -> Iterator[Server]:
    """ "slow" batches adaptively; "slowone" has no dynamic_batching: one request per execution, so a
    queue of them holds a request back for several executions."""
    repo = tmp_path_factory.mktemp("models")
    write_onnx_model(repo, "slow", [1], slow=True)
    write_onnx_model(repo, "slowone", [1], slow=True)
    config = repo / "slowone" / "config.pbtxt"
    config.write_text(config.read_text().replace("dynamic_batching {}\n", ""))
    with running_server(repo, tmp_path_factory.mktemp("logs"), default_slo_ms=SLO_MS, grpc_front=grpc_front) as server:
        yield server


def _grpc_input(x: np.ndarray) -> tgrpc.InferInput:
    i = tgrpc.InferInput("features", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def _rest(server: Server, model: str, headers: dict[str, str] | None = None) -> str:
    with httpx.Client(timeout=120, headers={**server.headers, **(headers or {})}) as client:  # no deadline sent
        r = client.post(f"http://{server.http}/v2/models/{model}/infer", json=BODY)
    return "OK" if r.status_code == 200 else f"{r.status_code} {r.text[:120]}"


def _grpc(server: Server, model: str, timeout_us: int | None = None) -> str:
    client = server.grpc_client()
    try:
        # No client_timeout: no gRPC deadline. `timeout` is Triton's request parameter (µs).
        kwargs = {"timeout": timeout_us} if timeout_us else {}
        result = client.infer(model, [_grpc_input(np.full((1, 64), 0.5, np.float32))], **kwargs)
        assert result.as_numpy("probabilities").shape == (1, 10)
        return "OK"
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()[:120]}"
    finally:
        client.close()


def _burst(calls: list[Callable[[], str]]) -> list[str]:
    """Run the calls at once (a barrier releases them together); their answers in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], str]) -> str:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_requests_without_a_deadline_are_all_answered_through_a_stall_on_both_transports(stalled: Server) -> None:
    n = 12
    answers = _burst(
        [lambda: _rest(stalled, "slow") for _ in range(n)] + [lambda: _grpc(stalled, "slow") for _ in range(n)]
    )
    rest, grpc_ = Counter(answers[:n]), Counter(answers[n:])
    assert (rest, grpc_) == ({"OK": n}, {"OK": n})
    # They really were late (so the old behaviour would have failed them), and none was expired.
    assert stalled.metric("flywheel_modelserver_slo_late_total", model="slow", version="1") > 0
    assert stalled.metric("flywheel_modelserver_expired_total", model="slow", version="1") == 0


def test_a_client_deadline_shorter_than_the_stall_is_not_computed(stalled: Server) -> None:
    expired_before = stalled.metric("flywheel_modelserver_expired_total", model="slowone", version="1")
    background, stop = 6, threading.Event()

    def closed_loop() -> list[str]:
        answers = []
        while not stop.is_set():
            answers.append(_grpc(stalled, "slowone"))
        return answers

    with ThreadPoolExecutor(background) as pool:
        loops = [pool.submit(closed_loop) for _ in range(background)]
        try:
            # Requests queued on one instance that runs one per execution: a new request waits for at
            # least one whole execution (tens of ms), far longer than its 10 ms deadline.
            wait_until(
                lambda: stalled.metric("flywheel_modelserver_queue_depth", model="slowone", version="1") >= 3,
                timeout_s=60,
                proc=stalled.proc,
                message="requests queued on slowone",
            )
            rest, grpc_ = _burst(
                [
                    lambda: _rest(stalled, "slowone", headers={"X-Flywheel-Timeout-Ms": "10"}),
                    lambda: _grpc(stalled, "slowone", timeout_us=10_000),
                ]
            )
        finally:
            stop.set()
        answered = [a for loop in loops for a in loop.result(timeout=120)]
    assert answered and set(answered) == {"OK"}, Counter(answered)  # no deadline: every one answered
    assert rest.startswith("504 ") and "not computed" in rest, rest
    assert grpc_.startswith("StatusCode.DEADLINE_EXCEEDED") and "not computed" in grpc_, grpc_
    assert stalled.metric("flywheel_modelserver_expired_total", model="slowone", version="1") == expired_before + 2
    # Out of range or malformed: a clear 400 naming the header, never a silent default.
    for bad in ("0", "-1", "nan", "inf", "3600001", "soon"):
        answer = _rest(stalled, "slowone", headers={"X-Flywheel-Timeout-Ms": bad})
        assert answer.startswith("400 ") and "X-Flywheel-Timeout-Ms" in answer, (bad, answer)

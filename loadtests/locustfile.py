"""Locust users for every Flywheel entry point, with open-loop arrival shapes.

Users (pick with Locust's class selection, e.g. `locust -f loadtests/locustfile.py HttpPredictUser`):
* HttpPredictUser  — POST /v1/models/{model}:predict on the gateway (PNG digits).
* GrpcPredictUser  — ModelInfer over the Open Inference Protocol v2 gRPC stub on the gateway.
* KafkaLabelUser   — RawLabel events produced to flywheel.labels.raw.

Each user paces itself with `constant_throughput`, so the offered rate is users × per-user rate
whatever the latency (open loop, as a population of clients behaves). The shape is chosen by
FLYWHEEL_LOAD_SHAPE = steady | step | spike (rates from FLYWHEEL_LOAD_USERS).

Environment: FLYWHEEL_GATEWAY_URL (http://127.0.0.1:8080), FLYWHEEL_GATEWAY_GRPC (127.0.0.1:8081),
FLYWHEEL_API_KEY, FLYWHEEL_MODEL (digits), FLYWHEEL_KAFKA_BOOTSTRAP (127.0.0.1:9092),
FLYWHEEL_LOAD_RATE (requests/s per user, 10), FLYWHEEL_LOAD_USERS (10), FLYWHEEL_LOAD_DURATION_S (30),
FLYWHEEL_LOAD_SYNTHETIC (true: requests carry `X-Flywheel-Synthetic` / `x-flywheel-synthetic` and labels
`RawLabel.synthetic`, so the monitor and the lake leave them out of drift, accuracy and datasets).
To load a Kubernetes deployment, port-forward the gateway (kubectl port-forward svc/flywheel-gateway
8080 8081) or point FLYWHEEL_GATEWAY_URL at its ingress; load only systems you own.
"""

from __future__ import annotations

import base64
import os
import time
import uuid

import numpy as np
from locust import LoadTestShape, User, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests.digits import digit_pngs

MODEL = os.environ.get("FLYWHEEL_MODEL", "digits")
API_KEY = os.environ.get("FLYWHEEL_API_KEY", "")
RATE = float(os.environ.get("FLYWHEEL_LOAD_RATE", "10"))
USERS = int(os.environ.get("FLYWHEEL_LOAD_USERS", "10"))
DURATION_S = float(os.environ.get("FLYWHEEL_LOAD_DURATION_S", "30"))
PNGS, FEATURES, LABELS = digit_pngs()


# Load-test traffic is marked synthetic by default, so it never feeds drift, live accuracy or
# training data (the gateway and ingest pass the mark on; the monitor and the lake leave it out).
# FLYWHEEL_LOAD_SYNTHETIC=false sends it as production traffic (to test the monitor itself).
SYNTHETIC = os.environ.get("FLYWHEEL_LOAD_SYNTHETIC", "true").lower() not in ("0", "false", "no")


def _auth_headers() -> dict[str, str]:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    if SYNTHETIC:
        headers["X-Flywheel-Synthetic"] = "true"
    return headers


class HttpPredictUser(FastHttpUser):
    host = os.environ.get("FLYWHEEL_GATEWAY_URL", "http://127.0.0.1:8080")
    wait_time = constant_throughput(RATE)
    weight = 3

    @task
    def predict(self) -> None:
        i = np.random.randint(len(PNGS))
        body = {"instances": [{"b64": base64.b64encode(PNGS[i]).decode()}]}
        with self.client.post(
            f"/v1/models/{MODEL}:predict",
            json=body,
            headers=_auth_headers(),
            name="/v1/models/:predict",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")


class GrpcPredictUser(User):
    """A gRPC user over the OIP v2 stub; reports each call through Locust's request event."""

    wait_time = constant_throughput(RATE)
    weight = 2

    def on_start(self) -> None:
        import grpc

        from services.genproto.inference import grpc_predict_v2_pb2 as pb
        from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

        self._pb = pb
        self._channel = grpc.insecure_channel(os.environ.get("FLYWHEEL_GATEWAY_GRPC", "127.0.0.1:8081"))
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = ((("authorization", f"Bearer {API_KEY}"),) if API_KEY else ()) + (
            (("x-flywheel-synthetic", "true"),) if SYNTHETIC else ()
        )

    def on_stop(self) -> None:
        self._channel.close()

    @task
    def infer(self) -> None:
        import grpc

        pb = self._pb
        i = np.random.randint(len(FEATURES))
        request = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 64])],
            raw_input_contents=[FEATURES[i : i + 1].astype(np.float32).tobytes()],
        )
        start = time.perf_counter()
        exc: Exception | None = None
        size = 0
        try:
            size = self._stub.ModelInfer(request, timeout=2.0, metadata=self._metadata).ByteSize()
        except grpc.RpcError as err:
            exc = err
        events.request.fire(
            request_type="grpc",
            name="ModelInfer",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=size,
            exception=exc,
            context={},
        )


class KafkaLabelUser(User):
    """Produces RawLabel events (PNG digits with labels) to flywheel.labels.raw."""

    wait_time = constant_throughput(RATE)
    weight = 1

    def on_start(self) -> None:
        from services.events import EventProducer

        self._producer = EventProducer(os.environ.get("FLYWHEEL_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), client_id="locust")

    def on_stop(self) -> None:
        self._producer.close()

    @task
    def produce(self) -> None:
        from services.events import new_meta
        from services.events.topics import LABELS_RAW
        from services.genproto.flywheel.v1 import events_pb2 as ev

        i = np.random.randint(len(PNGS))
        event = ev.RawLabel(
            meta=new_meta("locust"),
            example_id=f"load-{uuid.uuid4().hex[:12]}",
            label=LABELS[i],
            annotator="locust",
            data=PNGS[i],
            content_type="image/png",
            synthetic=SYNTHETIC,
        )
        start = time.perf_counter()
        exc: Exception | None = None
        try:
            self._producer.send(LABELS_RAW.name, event)
            self._producer.flush(5)
        except Exception as err:  # noqa: BLE001 - reported to Locust as a failure, not hidden
            exc = err
        events.request.fire(
            request_type="kafka",
            name="produce flywheel.labels.raw",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(event.data),
            exception=exc,
            context={},
        )


class ArrivalShape(LoadTestShape):
    """steady: USERS for DURATION; step: 25/50/75/100 % in four steps; spike: 30 % with a 3× burst."""

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t > DURATION_S:
            return None
        shape = os.environ.get("FLYWHEEL_LOAD_SHAPE", "steady")
        if shape == "step":
            step = min(3, int(4 * t / DURATION_S))
            return max(1, round(USERS * (step + 1) / 4)), USERS
        if shape == "spike":
            burst = 0.4 * DURATION_S <= t < 0.6 * DURATION_S
            return max(1, round(USERS * (0.9 if burst else 0.3))), USERS
        return USERS, USERS


# -- SLO summary -------------------------------------------------------------------------------
SLO_MS = float(os.environ.get("FLYWHEEL_LOAD_SLO_MS", "100"))
MAX_FAILURE_RATIO = float(os.environ.get("FLYWHEEL_LOAD_MAX_FAILURES", "0.01"))
_good = {"n": 0}
_started = {"t": 0.0}


@events.test_start.add_listener
def _on_start(environment, **_kw) -> None:  # type: ignore[no-untyped-def]
    _started["t"] = time.monotonic()


@events.request.add_listener
def _count_good(response_time: float, exception: Exception | None, **_kw) -> None:  # type: ignore[no-untyped-def]
    if exception is None and response_time <= SLO_MS:
        _good["n"] += 1


@events.quitting.add_listener
def _summarise(environment, **_kw) -> None:  # type: ignore[no-untyped-def]
    """Print goodput at the SLO, write it as JSON, and fail the run when the SLO is missed."""
    import json

    total = environment.stats.total
    elapsed = max(1e-9, time.monotonic() - _started["t"])
    p99 = total.get_response_time_percentile(0.99) or 0.0
    summary = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "throughput_rps": total.num_requests / elapsed,
        "p50_ms": total.get_response_time_percentile(0.5) or 0.0,
        "p99_ms": p99,
        "slo_ms": SLO_MS,
        "goodput_rps": _good["n"] / elapsed,
    }
    failure_ratio = total.num_failures / max(1, total.num_requests)
    summary["slo_met"] = bool(total.num_requests) and p99 <= SLO_MS and failure_ratio <= MAX_FAILURE_RATIO
    print(
        f"SLO summary: {summary['requests']} requests, {summary['failures']} failed, "
        f"p50 {summary['p50_ms']:.1f} ms, p99 {p99:.1f} ms (SLO {SLO_MS:.0f} ms), "
        f"goodput {summary['goodput_rps']:.1f}/s of {summary['throughput_rps']:.1f}/s "
        f"-> {'MET' if summary['slo_met'] else 'MISSED'}"
    )
    path = os.environ.get("FLYWHEEL_LOAD_SUMMARY")
    if path:
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=2)
    if not summary["slo_met"]:
        environment.process_exit_code = 1

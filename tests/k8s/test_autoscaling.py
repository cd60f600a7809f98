"""The model server's HPA on a custom metric, on a real cluster (issue 19): the chart's metricsAdapter
(prometheus-adapter behind the API server's aggregation layer, and a Prometheus of the release that
scrapes the model-server pods) serves flywheel_modelserver_requests_per_second, and the HPA scales
the model server up under Locust load through the gateway and back down when the load stops.

One install: the model server from 1 replica (HPA min 1, max 3, target 8 requests/s per pod, a
15 s scale-down stabilization window instead of the chart's 300 s), one gateway, the adapter with a
30 s rate window. Then:

1. the APIService is Available and the adapter answers the metric for the model-server pod;
2. Locust's GrpcPredictUser through the gateway (4 users x 10/s: under the gateway's 100/s per key)
   for LOAD_S: the HPA reads a rate above its target and asks for 3 replicas, and 3 become Ready;
   Locust sees no failure;
3. no load: the rate falls to 0 and the HPA brings the model server back to 1.

The HPA's observed metric and replicas are printed every few seconds (make test-k8s runs pytest
with -s). Services the test does not use (ingest, lake, monitor, trainer) are left out.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from loadtests.run import run_locust
from tests.k8s.conftest import (
    create_namespace,
    install,
    kubectl,
    port_forwards,
    remove_namespace,
    secret_value,
    start_deps,
    step,
    wait_until,
)
from tests.k8s.serving import MODEL, Client, publish_model, wait_serving

NAMESPACE = "flywheel-autoscaling"
RELEASE = "flywheel"
FULL = f"{RELEASE}-flywheel"
METRIC = "flywheel_modelserver_requests_per_second"
TARGET = 8  # requests/s per pod: 40/s of load wants 5 pods, so the HPA goes to its maximum
MAX_REPLICAS = 3
USERS, RATE = 4, 10.0  # Locust users x requests/s each: 40/s, under the gateway's 100/s per key
LOAD_S = 75.0
SETTINGS = [
    "services.modelserver.replicas=1",
    "services.modelserver.autoscaling.enabled=true",
    "services.modelserver.autoscaling.minReplicas=1",
    f"services.modelserver.autoscaling.maxReplicas={MAX_REPLICAS}",
    f"services.modelserver.autoscaling.metricName={METRIC}",
    f"services.modelserver.autoscaling.targetAverageValue={TARGET}",
    "services.modelserver.autoscaling.behavior.scaleDown.stabilizationWindowSeconds=15",
    "metricsAdapter.enabled=true",
    "metricsAdapter.rateWindow=30s",
    "metricsAdapter.relistInterval=10s",
    "services.gateway.replicas=1",
    "services.ingest.enabled=false",
    "services.lake.enabled=false",
    "services.monitor.enabled=false",
    "services.trainer.enabled=false",
    "grafana.dashboards.enabled=false",
]
GATEWAY_HTTP, GATEWAY_GRPC = 8080, 8081  # services.gateway.ports


class Timeline:
    """The HPA's observed metric, desired and current replicas, and the Deployment's Ready pods,
    sampled every few seconds from the Timeline's creation."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str, int, int, int]] = []

    def sample(self) -> tuple[str, int, int, int]:
        hpa = json.loads(kubectl("-n", NAMESPACE, "get", "hpa", f"{FULL}-modelserver", "-o", "json").stdout)
        dep = json.loads(kubectl("-n", NAMESPACE, "get", "deployment", f"{FULL}-modelserver", "-o", "json").stdout)
        status = hpa.get("status", {})
        metrics = status.get("currentMetrics") or [{}]
        value = metrics[0].get("pods", {}).get("current", {}).get("averageValue", "-")
        row = (value, status.get("desiredReplicas", 0), status.get("currentReplicas", 0),
               dep.get("status", {}).get("readyReplicas", 0))  # fmt: skip
        elapsed = time.monotonic() - self.t0
        self.rows.append((elapsed, *row))
        print(f"    t={elapsed:5.0f} s  {METRIC}={value:>6}  desired={row[1]} current={row[2]} ready={row[3]}")
        return row

    def until(self, what: str, done, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
        wait_until(what, lambda: done(*self.sample()), timeout_s=timeout_s, interval_s=5)


def condition(kind: str, name: str, ctype: str) -> str:
    path = f"jsonpath={{.status.conditions[?(@.type=='{ctype}')].status}}"
    return kubectl("-n", NAMESPACE, "get", kind, name, "-o", path, check=False).stdout


def served_metric() -> list[dict]:
    """The adapter's answer for every model-server pod, through the API server's aggregation layer."""
    out = kubectl(
        "get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/pods/*/{METRIC}", check=False
    )
    return json.loads(out.stdout).get("items", []) if out.returncode == 0 else []


@pytest.mark.timeout(900)
def test_hpa_scales_the_model_server_on_the_adapters_metric(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_MODEL", MODEL)  # the model Locust's users ask for (loadtests/locustfile.py)
    with step("namespace and Kafka (PostgreSQL comes with the chart)"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    try:
        with step("helm install --wait: model server (HPA 1..3 on requests/s), gateway, adapter, Prometheus"):
            install(NAMESPACE, RELEASE, SETTINGS)
        with step(f"{MODEL} published (model repository + flywheel.models)"):
            publish_model(NAMESPACE, RELEASE, SETTINGS)
        api_key = secret_value(NAMESPACE, RELEASE, "api-keys").split(",")[0]
        with port_forwards(NAMESPACE, f"{FULL}-gateway", GATEWAY_HTTP, GATEWAY_GRPC) as (http_port, grpc_port):
            gateway = f"http://127.0.0.1:{http_port}"
            with step("the model served; the adapter answers the metric; the HPA reads it"):
                client = Client(gateway, api_key)
                try:
                    wait_serving(client, f"the gateway serving {MODEL}")
                finally:
                    client.close()
                available = wait_until(
                    "APIService v1beta1.custom.metrics.k8s.io Available",
                    lambda: condition("apiservice", "v1beta1.custom.metrics.k8s.io", "Available") == "True",
                    timeout_s=60,
                )
                assert available
                items = wait_until(f"the adapter serving {METRIC}", served_metric, timeout_s=90, interval_s=3)
                print(f"    served: {[(i['describedObject']['name'], i['value']) for i in items]}")
                wait_until(
                    "the HPA reading its metric (ScalingActive)",
                    lambda: condition("hpa", f"{FULL}-modelserver", "ScalingActive") == "True",
                    timeout_s=90,
                    interval_s=3,
                )

            timeline = Timeline()
            result: dict = {}

            def load() -> None:
                result["code"], result["summary"] = run_locust(
                    gateway, f"127.0.0.1:{grpc_port}", api_key, "", tmp_path / "locust",
                    users=USERS, rate=RATE, duration_s=LOAD_S, user_classes=("GrpcPredictUser",), slo_ms=1000,
                )  # fmt: skip

            with step(f"scale up: Locust {USERS} users x {RATE:.0f}/s for {LOAD_S:.0f} s"):
                locust = threading.Thread(target=load, daemon=True)
                locust.start()
                timeline.until(
                    f"the HPA at {MAX_REPLICAS} replicas, all Ready",
                    lambda value, desired, current, ready: desired == current == ready == MAX_REPLICAS,
                    timeout_s=LOAD_S + 30,
                )
                up_s = timeline.rows[-1][0]
                locust.join(LOAD_S + 180)
                assert "summary" in result, "Locust did not finish"
                summary = result["summary"]
                print(f"    Locust: {json.dumps(summary)}; scaled to {MAX_REPLICAS} Ready in {up_s:.0f} s")
                assert summary["requests"] >= USERS * RATE * LOAD_S * 0.25, summary
                assert summary["failures"] == 0, summary

            with step("scale down: no load"):
                t_stop = time.monotonic() - timeline.t0
                timeline.until(
                    "the HPA back at 1 replica",
                    lambda value, desired, current, ready: desired == current == ready == 1,
                    timeout_s=240,
                )
                print(f"    back to 1 replica {timeline.rows[-1][0] - t_stop:.0f} s after the load stopped")
            peak = max(float(str(v).rstrip("m")) / (1000 if str(v).endswith("m") else 1)
                       for _, v, *_ in timeline.rows if v != "-")  # fmt: skip
            assert peak > TARGET, f"the HPA never saw {METRIC} above {TARGET}: {timeline.rows}"
    finally:
        with step("namespace removed, volumes back in the pool"):
            remove_namespace(NAMESPACE, RELEASE)

"""The chart's metricsAdapter (prometheus-adapter and a Prometheus of the release serving the model
server's HPA metric): what `helm template` renders, and the settings it refuses."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import render_refused, render_set

ADAPTER = "rel-flywheel-metrics-adapter"
ON = "metricsAdapter.enabled=true"
RATE = "services.modelserver.autoscaling.metricName=flywheel_modelserver_requests_per_second"


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_off_by_default_and_the_hpa_keeps_the_charts_behavior(helm: Path) -> None:
    docs = render_set(helm)
    assert not by_kind(docs, "APIService")
    assert not any("metrics-adapter" in d["metadata"]["name"] or "prometheus" in d["metadata"]["name"] for d in docs)
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-flywheel-modelserver"]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "flywheel_modelserver_queue_seconds"


def test_adapter_registers_custom_metrics_and_queries_the_releases_prometheus(helm: Path) -> None:
    docs = render_set(helm, ON, RATE, "metricsAdapter.rateWindow=45s",
                      "services.modelserver.autoscaling.behavior.scaleDown.stabilizationWindowSeconds=15")  # fmt: skip
    services = by_kind(docs, "APIService")
    assert set(services) == {"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}
    for api in services.values():
        spec = api["spec"]
        assert spec["service"] == {"name": ADAPTER, "namespace": "flywheel", "port": 443}
        assert not spec.get("insecureSkipTLSVerify")
        assert spec["caBundle"]
    adapter = by_kind(docs, "Deployment")[ADAPTER]["spec"]["template"]["spec"]
    args = adapter["containers"][0]["args"]
    assert "--prometheus-url=http://rel-flywheel-prometheus.flywheel.svc:9090" in args
    assert "rel-flywheel-prometheus" in by_kind(docs, "Service")
    rules = yaml.safe_load(by_kind(docs, "ConfigMap")[ADAPTER]["data"]["config.yaml"])["rules"]
    served = {r["name"]["as"]: r["metricsQuery"] for r in rules}
    assert set(served) == {"flywheel_modelserver_queue_seconds", "flywheel_modelserver_requests_per_second"}
    assert all("[45s]" in q for q in served.values())
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-flywheel-modelserver"]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "flywheel_modelserver_requests_per_second"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 15
    # The API server reaches the adapter through its aggregation layer: delegated authn/authz.
    bindings = by_kind(docs, "ClusterRoleBinding")
    assert any(b["roleRef"]["name"] == "system:auth-delegator" for b in bindings.values())
    reader = by_kind(docs, "RoleBinding")[f"{ADAPTER}-flywheel-auth-reader"]
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"


def test_adapter_certificate_is_signed_by_the_pinned_ca_for_its_service(helm: Path, tmp_path: Path) -> None:
    docs = render_set(helm, ON, RATE)
    ca = base64.b64decode(by_kind(docs, "APIService")["v1beta1.custom.metrics.k8s.io"]["spec"]["caBundle"])
    cert = base64.b64decode(by_kind(docs, "Secret")[f"{ADAPTER}-tls"]["data"]["tls.crt"])
    (tmp_path / "ca.pem").write_bytes(ca)
    (tmp_path / "cert.pem").write_bytes(cert)
    # openssl verifies the chain and the name the API server dials (<service>.<namespace>.svc).
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), "-verify_hostname",
         f"{ADAPTER}.flywheel.svc", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_only_the_releases_model_servers(helm: Path) -> None:
    docs = render_set(helm, ON, RATE)
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["rel-flywheel-prometheus"]["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/sd/targets.json"]
    pod = by_kind(docs, "Deployment")["rel-flywheel-prometheus"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "targets")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["POD_SELECTOR"] == "app.kubernetes.io/name=modelserver,app.kubernetes.io/instance=rel"
    assert env["TARGET_PORT"] == "8000"
    role = by_kind(docs, "Role")["rel-flywheel-prometheus"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    # The model server's NetworkPolicy admits this Prometheus on its HTTP port (/metrics).
    policy = by_kind(docs, "NetworkPolicy")["rel-flywheel-modelserver"]
    scrape = [r for r in policy["spec"]["ingress"]
              if any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
                     for p in r["from"])]  # fmt: skip
    assert scrape and scrape[0]["ports"][0]["port"] == 8000


def test_an_external_prometheus_replaces_the_charts_own(helm: Path) -> None:
    docs = render_set(helm, ON, RATE, "metricsAdapter.prometheusUrl=http://prometheus-operated.monitoring.svc:9090")
    assert "rel-flywheel-prometheus" not in by_kind(docs, "Deployment")
    args = by_kind(docs, "Deployment")[ADAPTER]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--prometheus-url=http://prometheus-operated.monitoring.svc:9090" in args


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((ON, "services.modelserver.engine=triton"), "Triton does not export"),
        ((ON, "services.modelserver.autoscaling.metricName=nv_inference_queue"), "is not served by metricsAdapter"),
        ((ON, "tls.enabled=true", "tls.secretName=flywheel-tls"), "needs metricsAdapter.prometheusUrl"),
        ((ON, "metricsAdapter.rateWindow=1 minute"), "rateWindow"),
        ((ON, "metricsAdapter.prometheusUrl=file:///etc/passwd"), "prometheusUrl"),
    ],
)
def test_refused_settings_say_why(helm: Path, settings: tuple[str, ...], message: str) -> None:
    assert message in render_refused(helm, *settings)

"""How the gateway finds the model servers (services.gateway.modelserverDiscovery), checked on renders:
by default a headless Service selecting the model-server pods (one A record per Ready pod, which the
gateway balances over per request), the ClusterIP Service kept beside it; `service` points the gateway
back at the ClusterIP Service and renders no headless one. tests/k8s/test_scaleout.py proves the split
on a cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART, VALUE_SETS
from tests.deploy.conftest import render_set as render

ADDR = "FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR"


def services(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}


def gateway_addr(docs: list[dict]) -> tuple[str, int]:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-flywheel-gateway")
    host, port = cm["data"][ADDR].rsplit(":", 1)
    return host, int(port)


def modelserver_pod_labels(docs: list[dict]) -> dict[str, str]:
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-flywheel-modelserver"
    )
    return deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_headless_service_selects_the_model_server_pods_with_its_ports(helm: Path, values: str) -> None:
    docs = render(helm, values=values)
    found = services(docs)
    headless, cluster_ip = found["rel-flywheel-modelserver-pods"], found["rel-flywheel-modelserver"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False  # only Ready pods in the DNS answer
    assert "type" not in headless["spec"] or headless["spec"]["type"] == "ClusterIP"
    # The same pods and ports as the ClusterIP Service, which stays for other clients.
    assert headless["spec"]["selector"] == cluster_ip["spec"]["selector"]
    assert headless["spec"]["ports"] == cluster_ip["spec"]["ports"]
    assert cluster_ip["spec"].get("clusterIP") != "None"
    labels = modelserver_pod_labels(docs)
    assert all(labels.get(k) == v for k, v in headless["spec"]["selector"].items())
    assert {p["name"] for p in headless["spec"]["ports"]} >= {"http", "grpc"}


@pytest.mark.parametrize("values", VALUE_SETS)
def test_gateway_points_at_the_headless_service_by_default(helm: Path, values: str) -> None:
    docs = render(helm, values=values)
    host, port = gateway_addr(docs)
    assert host == "rel-flywheel-modelserver-pods"
    http = next(p for p in services(docs)[host]["spec"]["ports"] if p["name"] == "http")
    assert port == http["port"] == 8000


def test_service_discovery_points_at_the_cluster_ip_service(helm: Path) -> None:
    docs = render(helm, "services.gateway.modelserverDiscovery=service")
    assert gateway_addr(docs) == ("rel-flywheel-modelserver", 8000)
    assert "rel-flywheel-modelserver-pods" not in services(docs)
    assert "rel-flywheel-modelserver" in services(docs)


def test_the_port_follows_the_model_servers_http_port(helm: Path) -> None:
    for discovery, host in (("headless", "rel-flywheel-modelserver-pods"), ("service", "rel-flywheel-modelserver")):
        discovery_setting = f"services.gateway.modelserverDiscovery={discovery}"
        docs = render(helm, discovery_setting, "services.modelserver.ports.http=9000")
        assert gateway_addr(docs) == (host, 9000)
        http = next(p for p in services(docs)[host]["spec"]["ports"] if p["name"] == "http")
        assert http["port"] == 9000 and http["targetPort"] == "http"


def test_unknown_discovery_is_refused(helm: Path) -> None:
    args = [str(helm), "template", "rel", str(CHART), "--set", "services.gateway.modelserverDiscovery=dns"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "modelserverDiscovery" in out.stderr


def test_no_headless_service_without_a_gateway(helm: Path) -> None:
    docs = render(helm, "services.gateway.enabled=false")
    assert "rel-flywheel-modelserver-pods" not in services(docs)
    assert "rel-flywheel-modelserver" in services(docs)


def test_service_monitor_scrapes_the_pods_once(helm: Path) -> None:
    """The ServiceMonitor selects the release's Services by label: the headless one would scrape every
    model-server pod a second time (and double every sum over them)."""
    docs = render(helm, values="keda-prometheus-values.yaml")
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]

    def selected(service: dict) -> bool:
        labels = service["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        for expr in selector.get("matchExpressions", []):
            op, key = expr["operator"], expr["key"]
            if (op == "DoesNotExist" and key in labels) or (op == "Exists" and key not in labels):
                return False
            if op == "In" and labels.get(key) not in expr["values"]:
                return False
            if op == "NotIn" and labels.get(key) in expr["values"]:
                return False
        return True

    scraped = {name for name, svc in services(docs).items() if selected(svc)}
    assert "rel-flywheel-modelserver" in scraped and "rel-flywheel-gateway" in scraped
    assert "rel-flywheel-modelserver-pods" not in scraped

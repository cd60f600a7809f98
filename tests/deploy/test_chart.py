"""Static checks of the Helm chart and the kustomize tree: no cluster runs here, so every rendered
document is validated against the Kubernetes OpenAPI schemas (kubernetes-validate) and CRD kinds
against the schema subsets vendored in charts/crd-schemas/."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import CHART, OVERLAYS, ROOT, VALUE_SETS, render_chart, render_kustomize

K8S_VERSIONS = ["1.29.0", "1.37.0"]  # lowest and highest supported (Chart.yaml kubeVersion >=1.29)
CRD_SCHEMAS = {p.stem: json.loads(p.read_text()) for p in (ROOT / "charts" / "crd-schemas").glob("*.json")}
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def validate_all(docs: list[dict]) -> None:
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_KINDS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            continue
        if "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].split("/")[0].endswith("k8s.io"):
            pytest.fail(f"unexpected custom kind {key}: add its schema to charts/crd-schemas/")
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_helm_lint_strict(helm: Path) -> None:
    for values in VALUE_SETS:
        out = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", VALUE_SETS)
def test_chart_renders_valid_documents(helm: Path, values: str) -> None:
    docs = render_chart(helm, values)
    validate_all(docs)
    check_workloads(docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_valid_documents(kubectl: Path, overlay: str) -> None:
    docs = render_kustomize(kubectl, overlay)
    validate_all(docs)
    check_workloads(docs)


def test_value_sets_cover_the_features(helm: Path) -> None:
    kinds = {v: {d["kind"] for d in render_chart(helm, v)} for v in VALUE_SETS}
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule", "Kafka"} <= kinds["keda-prometheus-values.yaml"]
    assert "ScaledObject" not in kinds["default-values.yaml"]
    gpu = next(
        d
        for d in render_chart(helm, "gpu-values.yaml")
        if d["kind"] == "Deployment" and "modelserver" in d["metadata"]["name"]
    )
    pod = gpu["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] and pod["nodeSelector"]
    assert pod["containers"][0]["image"].split(":")[0].endswith("-gpu")
    triton = next(
        d
        for d in render_chart(helm, "triton-values.yaml")
        if d["kind"] == "Deployment" and "modelserver" in d["metadata"]["name"]
    )
    assert "tritonserver" in triton["spec"]["template"]["spec"]["containers"][0]["image"]


def modelserver_deployment(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-modelserver"))


def test_prometheus_rule_matches_infra_rules(helm: Path) -> None:
    groups = []
    for path in sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    infra = {"groups": groups}
    rule = next(d for d in render_chart(helm, "keda-prometheus-values.yaml") if d["kind"] == "PrometheusRule")
    assert rule["spec"] == infra, (
        "charts/flywheel/files/prometheus-rules.yml drifted from infra/prometheus/rules: "
        "run python infra/tools/sync_chart_files.py"
    )


def test_only_gateway_and_ingest_reachable_from_outside(helm: Path) -> None:
    open_to_all = set()
    for d in render_chart(helm, "default-values.yaml"):
        if d["kind"] == "NetworkPolicy" and any("from" not in rule for rule in d["spec"]["ingress"]):
            open_to_all.add(d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert open_to_all == {"gateway", "ingest"}


def test_trainer_role_is_least_privilege(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(d for d in docs if d["kind"] == "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    assert {"jobs", "jobs/status"} == {
        r for rule in role["rules"] if "batch" in rule["apiGroups"] for r in rule["resources"]
    }
    status = next(rule for rule in role["rules"] if rule["resources"] == ["jobs/status"])
    assert status["verbs"] == ["get"]  # services/trainer/runners/kubernetes.py reconcile(): read_namespaced_job_status


def test_values_schema_rejects_unknown_engine(helm: Path) -> None:
    out = subprocess.run(
        [str(helm), "template", "rel", str(CHART), "--set", "services.modelserver.engine=tensorflow"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "engine" in out.stderr


def check_workloads(docs: list[dict]) -> None:
    """Selectors match pod labels and Services select a workload; containers are probed, bounded and non-root."""
    pods = []
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "APIService":  # named <version>.<group> by the API server's rule: dots included
            assert name == f"{d['spec']['version']}.{d['spec']['group']}" and DNS_SUBDOMAIN.match(name), name
        else:
            assert DNS_SUBDOMAIN.match(name) and len(name) <= 63 and DNS_LABEL.match(name), name
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            for k, v in d["spec"]["selector"]["matchLabels"].items():
                assert labels.get(k) == v, f"{name}: selector {k}={v} does not match its pod labels"
            pods.append((name, labels, d["spec"]["template"]["spec"]))
        if d["kind"] == "Pod":
            pods.append((name, d["metadata"]["labels"], d["spec"]))
    for name, _labels, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            assert DNS_LABEL.match(c["name"]), c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{name}/{c['name']}: resources"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"].get("runAsNonRoot", spec["securityContext"]["runAsNonRoot"]) is True
            if not name.endswith("-test-smoke"):
                assert c.get("livenessProbe") and c.get("readinessProbe"), f"{name}/{c['name']}: probes"
            for p in c.get("ports", []):
                assert len(p["name"]) <= 15 and DNS_LABEL.match(p["name"]), p["name"]
    deployment_labels = [labels for _n, labels, _s in pods]
    for d in docs:
        sel = None
        if d["kind"] == "Service":
            sel = d["spec"]["selector"]
        elif d["kind"] in ("PodDisruptionBudget",):
            sel = d["spec"]["selector"]["matchLabels"]
        elif d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"]["matchLabels"]
        if sel is not None:
            assert any(all(labels.get(k) == v for k, v in sel.items()) for labels in deployment_labels), (
                f"{d['kind']} {d['metadata']['name']} selects no pod"
            )
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = d["spec"]["scaleTargetRef"]["name"]
            assert target in {d2["metadata"]["name"] for d2 in docs if d2["kind"] == "Deployment"}, target


def is_helm_test(doc: dict) -> bool:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"


def test_kustomize_base_has_the_chart_topology(helm: Path, kubectl: Path) -> None:
    """k8s/base was generated from the chart's defaults; the same kinds and names must come out of both."""
    chart = {
        (d["kind"], d["metadata"]["name"].removeprefix("rel-"))
        for d in render_chart(helm, "default-values.yaml")
        if not is_helm_test(d)
    }
    base = {(d["kind"], d["metadata"]["name"].removeprefix("flywheel-")) for d in render_kustomize(kubectl, "base")}
    assert chart == base


def test_kustomize_base_is_up_to_date(helm: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_k8s_base", ROOT / "infra" / "tools" / "render_k8s_base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    actual = {p.name: p.read_text() for p in (ROOT / "k8s" / "base").glob("*.yaml")}
    assert actual == expected, "k8s/base is stale: run .venv/bin/python infra/tools/render_k8s_base.py"


def _settings_env_names() -> set[str]:
    import importlib

    from services.config import CommonSettings

    classes = [CommonSettings]
    for svc in ("gateway", "modelserver", "ingest", "lake", "trainer", "monitor"):
        module = importlib.import_module(f"services.{svc}.settings")
        classes += [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]
    names = set()
    for cls in classes:
        fields = getattr(cls, "model_fields", {})
        names |= {cls.model_config.get("env_prefix", "") + f.upper() for f in fields}
    return names


@pytest.mark.parametrize("values", ["default-values.yaml", "keda-prometheus-values.yaml"])
def test_every_flywheel_env_var_is_a_real_setting(helm: Path, values: str) -> None:
    """A misspelt FLYWHEEL_* variable is silently ignored by pydantic-settings: catch it here."""
    known = _settings_env_names()
    used: set[str] = set()
    for d in render_chart(helm, values):
        if d["kind"] == "ConfigMap":
            used |= {k for k in (d.get("data") or {}) if k.startswith("FLYWHEEL_")}
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "Pod"):
            spec = d["spec"]["template"]["spec"] if d["kind"] != "Pod" else d["spec"]
            for c in spec.get("containers", []):
                used |= {e["name"] for e in c.get("env", []) if e["name"].startswith("FLYWHEEL_")}
    assert used, "no FLYWHEEL_ variables rendered"
    assert used <= known, f"not settings of any service: {sorted(used - known)}"

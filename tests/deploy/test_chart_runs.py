"""What the chart must get right for its pods to run (proven on a real cluster by tests/k8s; checked
here on every render, without one): containers start the image's entry point as it is, services
listen on every address, every service and training Job share one volume, the model repository is
the same folder for the writer and the readers, and choices the chart cannot serve fail at render."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT, VALUE_SETS, load_docs, render_chart

SERVICES = ["gateway", "ingest", "lake", "modelserver", "monitor", "trainer"]


def deployments(docs: list[dict]) -> dict[str, dict]:
    """Flywheel's services (not the bundled PostgreSQL)."""
    found = {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs if d["kind"] == "Deployment"}
    return {name: d for name, d in found.items() if name in SERVICES}


def env_of(docs: list[dict], name: str) -> dict[str, str]:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(f"-{name}"))
    return cm["data"]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_flywheel_containers_run_the_image_entrypoint(helm: Path, values: str) -> None:
    """The images' ENTRYPOINT is `python -m services.<name>`: args would be appended to it (argparse exits 2)."""
    for name, d in deployments(render_chart(helm, values)).items():
        container = d["spec"]["template"]["spec"]["containers"][0]
        if "flywheel-" not in container["image"]:
            continue  # Triton: its own command line
        assert "args" not in container and "command" not in container, f"{name}: {container.get('args')}"


def test_every_service_listens_on_all_addresses(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    for name in SERVICES:
        assert env_of(docs, name)[f"FLYWHEEL_{name.upper()}_HOST"] == "0.0.0.0", name


def test_one_shared_volume_for_services_and_training_jobs(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    claims = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claims == ["rel-flywheel-data", "rel-flywheel-postgresql"]  # the bundled database's is its own
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"].endswith("-data"))
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, d in deployments(docs).items():
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "rel-flywheel-data", name
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data")
        assert mount["mountPath"] == "/data"
        assert mount["readOnly"] is (name not in ("ingest", "lake", "trainer")), name
    trainer = env_of(docs, "trainer")
    # services/trainer/runners/kubernetes.py mounts this claim at /data and writes /data/models.
    assert trainer["FLYWHEEL_TRAINER_K8S_PVC"] == "rel-flywheel-data"
    for name in ("modelserver", "gateway", "trainer", "monitor"):
        assert env_of(docs, name)[f"FLYWHEEL_{name.upper()}_MODEL_REPOSITORY"] == "/data/models", name
    assert env_of(docs, "lake")["FLYWHEEL_LAKE_ROOT"] == "file:///data/lake"
    assert trainer["FLYWHEEL_TRAINER_LAKE_ROOT"] == env_of(docs, "monitor")["FLYWHEEL_MONITOR_LAKE_ROOT"]
    assert env_of(docs, "ingest")["FLYWHEEL_OBJECT_STORE_URL"] == "file:///data/objects"


def test_services_find_each_other(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    trainer = env_of(docs, "trainer")
    host, port = trainer["FLYWHEEL_TRAINER_LAKE_ADDR"].split(":")
    assert int(port) in [p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc"]
    assert trainer["FLYWHEEL_TRAINER_K8S_IMAGE"].endswith("/flywheel-trainer:0.1.0")
    gateway = env_of(docs, "gateway")
    host, port = gateway["FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR"].split(":")
    assert int(port) in [p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "http"]
    assert env_of(docs, "modelserver")["FLYWHEEL_MODELSERVER_CONSUME_MODEL_EVENTS"] == "true"


def test_webhook_token_comes_from_the_secret(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert len(secret["stringData"]["webhook-token"]) >= 32, "an empty value must generate a token"
    ingest = deployments(docs)["ingest"]["spec"]["template"]["spec"]["containers"][0]
    ref = next(e for e in ingest["env"] if e["name"] == "FLYWHEEL_INGEST_WEBHOOK_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "webhook-token"}


def test_triton_polls_the_repository(helm: Path) -> None:
    docs = render_chart(helm, "triton-values.yaml")
    args = deployments(docs)["modelserver"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-repository=/data/models" in args and "--model-control-mode=poll" in args


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("services.modelserver.engine=torchserve", "KServe v2"),
    ],
)
def test_choices_the_chart_cannot_serve_fail_at_render(helm: Path, setting: str, words: str) -> None:
    out = subprocess.run(
        [str(helm), "template", "rel", str(CHART), "--set", setting], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and setting.split("=")[0] in out.stderr and words in out.stderr, out.stderr


def test_helm_test_deploys_its_own_model(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    hooks = [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    pod = next(d for d in hooks if d["kind"] == "Pod")
    script = next(d for d in hooks if d["kind"] == "ConfigMap")["data"]["smoke_test.py"]
    assert script == (CHART / "files" / "smoke_test.py").read_text()
    compile(script, "smoke_test.py", "exec")
    assert "digits" not in script
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert set(env["SMOKE_SERVICES"]["value"].split(",")) == {
        f"{name}=http://rel-flywheel-{name}:{port}"
        for name, port in zip(SERVICES, [8080, 8100, 8200, 8000, 8400, 8300], strict=True)
    }
    claim = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    assert claim == "rel-flywheel-data"
    assert "SMOKE_MODELSERVER_ENGINE" not in env
    triton = next(d for d in render_chart(helm, "triton-values.yaml") if d["kind"] == "Pod")
    env = {e["name"]: e.get("value") for e in triton["spec"]["containers"][0]["env"]}
    assert env["SMOKE_MODELSERVER_ENGINE"] == "triton"
    assert env["SMOKE_MODELSERVER_METRICS"] == "http://rel-flywheel-modelserver:8002"


def test_dashboards_ship_as_sidecar_configmaps(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    shipped = {}
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1":
            ((name, text),) = d["data"].items()
            shipped[name] = json.loads(text)
    infra = {p.name: json.loads(p.read_text()) for p in (ROOT / "infra" / "grafana").glob("*.json")}
    assert shipped == infra, "charts/flywheel/files/dashboards drifted: run python infra/tools/sync_chart_files.py"
    off = load_docs(
        subprocess.run(
            [str(helm), "template", "rel", str(CHART), "--set", "grafana.dashboards.enabled=false"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert not [d for d in off if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_local_cluster_values_fit_two_cpus(helm: Path) -> None:
    """make test-k8s installs with these on a 2-CPU node (with Kafka, PostgreSQL and CoreDNS beside)."""
    docs = render_chart(helm, "local-cluster-values.yaml")
    millicores = 0
    for d in docs:
        if d["kind"] == "Deployment":
            cpu = str(d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
            each = int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
            millicores += d["spec"].get("replicas", 1) * each
    assert millicores <= 1000, millicores
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert yaml.safe_load((CHART / "ci" / "local-cluster-values.yaml").read_text())["services"]


def test_topics_exist_before_services_subscribe(helm: Path) -> None:
    """Consumers of a missing topic never get partitions (and stay unready): each pod first creates them."""
    for name, d in deployments(render_chart(helm, "default-values.yaml")).items():
        pod = d["spec"]["template"]["spec"]
        init = next(c for c in pod["initContainers"] if c["name"] == "kafka-topics")
        assert init["image"] == pod["containers"][0]["image"], name
        assert init["command"][:2] == ["python", "-c"] and "ensure_topics" in init["command"][2]
        assert init["resources"]["limits"] and init["securityContext"]["allowPrivilegeEscalation"] is False
    off = subprocess.run(
        [str(helm), "template", "rel", str(CHART), "--set", "kafka.createTopics=false"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert all(
        c["name"] != "kafka-topics"
        for d in deployments(load_docs(off.stdout)).values()
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
    )

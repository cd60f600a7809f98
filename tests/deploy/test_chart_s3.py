"""The chart's `s3` stores (issue 19, item 1), checked on renders:

- objectStore, lake and modelRepository with type s3 reach exactly the services that use them, as the
  settings the code reads (FLYWHEEL_OBJECT_STORE_URL, FLYWHEEL_*LAKE_ROOT, the model server's
  REMOTE_REPOSITORY and the trainer's REMOTE_MODEL_REPOSITORY), with the AWS_* keys by secretKeyRef only:
  no key value anywhere in the render but the Secret that holds it;
- the model server on an s3 repository mounts no shared volume: it pulls into an emptyDir cache;
- s3.bundled.enabled renders the Versity S3 Gateway (Deployment, Service, PVC, NetworkPolicy for the
  release's pods, a keys Secret random per render; test_chart_lookup.py: read back on upgrades);
- what cannot work is refused at render with the value to set; file/pvc (the default) is as before.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART, ROOT, render_chart, render_refused, render_set
from tests.deploy.test_chart import _settings_env_names

ALL_S3 = (
    "objectStore.type=s3",
    "objectStore.bucket=objs",
    "lake.type=s3",
    "lake.bucket=lakes",
    "lake.prefix=data/lake",
    "modelRepository.type=s3",
    "modelRepository.bucket=models",
    "modelRepository.prefix=",
)
OWN_SECRET = ("s3.existingSecret=our-s3", "s3.accessKeyIdKey=id", "s3.secretAccessKeyKey=key")
KEY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
USERS = {"ingest", "lake", "monitor", "modelserver", "trainer"}  # every service but the gateway uses a store


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"].removeprefix("rel-flywheel-"): d for d in docs if d["kind"] == kind}


def config(docs: list[dict], service: str) -> dict[str, str]:
    return by_kind(docs, "ConfigMap")[service]["data"]


def container(docs: list[dict], service: str) -> dict:
    return by_kind(docs, "Deployment")[service]["spec"]["template"]["spec"]["containers"][0]


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def key_refs(c: dict) -> dict[str, tuple[str, str]]:
    """The container's AWS_* keys: each a secretKeyRef, never a literal."""
    out = {}
    for name, entry in env(c).items():
        if name in KEY_ENV:
            assert "value" not in entry, f"{name} is a literal"
            ref = entry["valueFrom"]["secretKeyRef"]
            out[name] = (ref["name"], ref["key"])
    return out


def test_each_service_gets_its_stores_url_and_the_keys_by_reference(helm: Path) -> None:
    docs = render_set(helm, *ALL_S3, *OWN_SECRET, "s3.endpoint=https://minio.example:9000", "s3.region=eu-west-3")
    expected = {"AWS_ACCESS_KEY_ID": ("our-s3", "id"), "AWS_SECRET_ACCESS_KEY": ("our-s3", "key")}
    for service in USERS:
        assert key_refs(container(docs, service)) == expected, service
        data = config(docs, service)
        assert data["AWS_ENDPOINT_URL"] == "https://minio.example:9000" and data["AWS_REGION"] == "eu-west-3"
        assert not KEY_ENV & set(data), f"{service}: a key in the ConfigMap"
    assert not key_refs(container(docs, "gateway")) and "AWS_REGION" not in config(docs, "gateway")
    assert config(docs, "ingest")["FLYWHEEL_OBJECT_STORE_URL"] == "s3://objs/objects"
    assert config(docs, "lake")["FLYWHEEL_LAKE_ROOT"] == "s3://lakes/data/lake"
    assert config(docs, "monitor")["FLYWHEEL_MONITOR_LAKE_ROOT"] == "s3://lakes/data/lake"
    trainer = config(docs, "trainer")
    assert trainer["FLYWHEEL_OBJECT_STORE_URL"] == "s3://objs/objects"
    assert trainer["FLYWHEEL_TRAINER_LAKE_ROOT"] == "s3://lakes/data/lake"
    assert trainer["FLYWHEEL_TRAINER_REMOTE_MODEL_REPOSITORY"] == "s3://models"  # empty prefix: the bucket's root
    # The trainer still writes its local repository (the gateway's model cards read it) and publishes.
    assert trainer["FLYWHEEL_TRAINER_MODEL_REPOSITORY"] == "/data/models"
    # Training Jobs: the keys by reference too (the trainer's own AWS_* env is not copied as literals).
    refs = dict(e.split("=", 1) for e in trainer["FLYWHEEL_TRAINER_K8S_SECRET_ENV"].split(","))
    assert refs["AWS_ACCESS_KEY_ID"] == "our-s3:id" and refs["AWS_SECRET_ACCESS_KEY"] == "our-s3:key"
    server = config(docs, "modelserver")
    assert server["FLYWHEEL_MODELSERVER_REMOTE_REPOSITORY"] == "s3://models"
    assert server["FLYWHEEL_MODELSERVER_REMOTE_POLL_S"] == "10"
    assert server["FLYWHEEL_MODELSERVER_REMOTE_LATEST_VERSIONS"] == "3"
    # Every FLYWHEEL_* the chart sets is a setting some service reads (a misspelt one is ignored silently).
    used = {k for d in by_kind(docs, "ConfigMap").values() for k in (d.get("data") or {}) if k.startswith("FLYWHEEL_")}
    assert used <= _settings_env_names(), sorted(used - _settings_env_names())


def test_the_model_server_on_s3_caches_in_an_empty_dir_without_the_shared_volume(helm: Path) -> None:
    docs = render_set(helm, "modelRepository.type=s3", "modelRepository.bucket=mods", *OWN_SECRET)
    pod = by_kind(docs, "Deployment")["modelserver"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "data" not in volumes and volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/cache"] == "model-cache" and "/data" not in mounts
    assert config(docs, "modelserver")["FLYWHEEL_MODELSERVER_MODEL_REPOSITORY"].startswith("/cache/")
    # The other services keep the shared volume (the trainer writes models there; the gateway reads cards).
    for service in ("gateway", "trainer", "lake"):
        volumes = by_kind(docs, "Deployment")[service]["spec"]["template"]["spec"]["volumes"]
        assert any(v["name"] == "data" for v in volumes), service


def test_only_the_services_of_a_store_on_s3_get_s3_settings(helm: Path) -> None:
    docs = render_set(helm, "lake.type=s3", "lake.bucket=lakes", *OWN_SECRET)
    for service in ("lake", "monitor", "trainer"):
        assert set(key_refs(container(docs, service))) == KEY_ENV, service
    for service in ("ingest", "modelserver", "gateway"):
        assert not key_refs(container(docs, service)) and "AWS_REGION" not in config(docs, service), service
    assert config(docs, "ingest")["FLYWHEEL_OBJECT_STORE_URL"] == "file:///data/objects"
    assert config(docs, "modelserver")["FLYWHEEL_MODELSERVER_MODEL_REPOSITORY"] == "/data/models"
    assert "FLYWHEEL_TRAINER_REMOTE_MODEL_REPOSITORY" not in config(docs, "trainer")
    assert "AWS_ENDPOINT_URL" not in config(docs, "lake")  # no endpoint given, none bundled: AWS itself


def test_default_is_file_on_the_shared_volume_with_no_s3_anywhere(helm: Path) -> None:
    docs = render_chart(helm, "default-values.yaml")
    for d in docs:
        assert not [k for k in d.get("data") or {} if k.startswith("AWS_")], d["metadata"]["name"]
        assert not d["metadata"]["name"].endswith("-s3"), d["metadata"]["name"]
    for service in USERS | {"gateway"}:
        assert not key_refs(container(docs, service))
    assert config(docs, "ingest")["FLYWHEEL_OBJECT_STORE_URL"] == "file:///data/objects"
    assert config(docs, "trainer")["FLYWHEEL_OBJECT_STORE_URL"] == "file:///data/objects"
    assert config(docs, "lake")["FLYWHEEL_LAKE_ROOT"] == "file:///data/lake"
    assert config(docs, "modelserver")["FLYWHEEL_MODELSERVER_MODEL_REPOSITORY"] == "/data/models"
    assert "FLYWHEEL_MODELSERVER_REMOTE_REPOSITORY" not in config(docs, "modelserver")
    pod = by_kind(docs, "Deployment")["modelserver"]["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "data"]


def bundled(helm: Path) -> tuple[list[dict], str]:
    args = [
        str(helm),
        "template",
        "rel",
        str(CHART),
        "--namespace",
        "flywheel",
        "-f",
        str(CHART / "ci" / "s3-values.yaml"),
    ]
    text = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    from tests.deploy.conftest import load_docs

    return load_docs(text), text


def test_bundled_server_runs_versitygw_on_its_volume_with_the_secrets_keys(helm: Path) -> None:
    docs, _ = bundled(helm)
    keys = by_kind(docs, "Secret")["s3"]
    assert keys["type"] == "Opaque" and set(keys["stringData"]) == KEY_ENV
    deployment = by_kind(docs, "Deployment")["s3"]
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "flywheel.local/versitygw:v1.8.0"
    # versitygw's global options, then the posix backend and its root (`versitygw --help`).
    assert c["args"][:2] == ["--port", ":7070"] and c["args"][-2:] == ["posix", "/data"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {
        "ROOT_ACCESS_KEY_ID": {"name": "rel-flywheel-s3", "key": "AWS_ACCESS_KEY_ID"},
        "ROOT_SECRET_ACCESS_KEY": {"name": "rel-flywheel-s3", "key": "AWS_SECRET_ACCESS_KEY"},
    }
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "rel-flywheel-s3"
    pvc = by_kind(docs, "PersistentVolumeClaim")["s3"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (port,) = by_kind(docs, "Service")["s3"]["spec"]["ports"]
    assert port["port"] == 7070 and port["targetPort"] == "s3"
    policy = by_kind(docs, "NetworkPolicy")["s3"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "s3"
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "flywheel"}}}]
    assert rule["ports"] == [{"port": 7070, "protocol": "TCP"}]
    # The services use the bundled server and its keys.
    for service in USERS:
        assert config(docs, service)["AWS_ENDPOINT_URL"] == "http://rel-flywheel-s3:7070", service
        assert key_refs(container(docs, service)) == {
            "AWS_ACCESS_KEY_ID": ("rel-flywheel-s3", "AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": ("rel-flywheel-s3", "AWS_SECRET_ACCESS_KEY"),
        }, service


def test_bundled_keys_are_random_and_appear_only_in_their_secret(helm: Path) -> None:
    (first, text), (second, _) = bundled(helm), bundled(helm)
    a, b = by_kind(first, "Secret")["s3"]["stringData"], by_kind(second, "Secret")["s3"]["stringData"]
    assert len(a["AWS_ACCESS_KEY_ID"]) >= 16 and len(a["AWS_SECRET_ACCESS_KEY"]) >= 40
    for key in KEY_ENV:
        assert a[key] != b[key], f"{key} is the same in two renders: a published secret"
        # The whole output, comments and the helm test's documents included: once, in the Secret.
        assert text.count(a[key]) == 1, f"{key}'s value appears outside its Secret"


def test_an_existing_secret_replaces_the_generated_one(helm: Path) -> None:
    docs = render_set(helm, *OWN_SECRET, values="s3-values.yaml")
    assert "s3" not in by_kind(docs, "Secret")
    c = by_kind(docs, "Deployment")["s3"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["ROOT_ACCESS_KEY_ID"] == {"name": "our-s3", "key": "id"}
    assert refs["ROOT_SECRET_ACCESS_KEY"] == {"name": "our-s3", "key": "key"}


def test_helm_test_publishes_to_the_s3_repository_and_reads_the_lake_there(helm: Path) -> None:
    docs, _ = bundled(helm)
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    (c,) = pod["spec"]["containers"]
    values = {e["name"]: e.get("value") for e in c["env"]}
    assert values["SMOKE_REMOTE_MODEL_REPOSITORY"] == "s3://flywheel/models"
    assert values["SMOKE_LAKE"] == "s3://flywheel/lake"
    assert values["AWS_ENDPOINT_URL"] == "http://rel-flywheel-s3:7070"
    assert set(key_refs(c)) == KEY_ENV
    default = next(d for d in render_chart(helm, "default-values.yaml") if d["kind"] == "Pod")
    values = {e["name"]: e.get("value") for e in default["spec"]["containers"][0]["env"]}
    assert values["SMOKE_LAKE"] == "/data/lake" and "SMOKE_REMOTE_MODEL_REPOSITORY" not in values
    assert not KEY_ENV & set(values)


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (("objectStore.type=s3", "s3.bundled.enabled=true"), "objectStore.type=s3 needs objectStore.bucket"),
        (("lake.type=s3", "s3.bundled.enabled=true"), "lake.type=s3 needs lake.bucket"),
        (
            ("modelRepository.type=s3", "s3.bundled.enabled=true"),
            "modelRepository.type=s3 needs modelRepository.bucket",
        ),
        (
            ("lake.type=s3", "lake.bucket=lakes", "modelRepository.type=s3", "modelRepository.bucket=mods"),
            "lake.type=s3, modelRepository.type=s3 needs S3 credentials: s3.existingSecret",
        ),
        (("objectStore.type=s3", "objectStore.bucket=objs"), "s3.bundled.enabled=true"),
        (
            ("modelRepository.type=s3", "modelRepository.bucket=mods", "s3.existingSecret=x",
             "services.modelserver.engine=triton"),
            "services.modelserver.engine=triton with modelRepository.type=s3 is not supported",
        ),
        (("lake.type=s3", "lake.bucket=Not_A_Bucket", "s3.bundled.enabled=true"), "/lake/bucket"),
        (("modelRepository.type=minio",), "/modelRepository/type"),
        # Keys in the endpoint's URL would land in a ConfigMap: only a host (and port) is taken.
        (("s3.endpoint=http://id:secret@minio:9000",), "/s3/endpoint"),
    ],
)  # fmt: skip
def test_what_cannot_work_is_refused_with_the_value_to_set(helm: Path, sets: tuple[str, ...], says: str) -> None:
    assert says in render_refused(helm, *sets)


def test_triton_refusal_says_why(helm: Path) -> None:
    out = render_refused(
        helm,
        "modelRepository.type=s3",
        "modelRepository.bucket=mods",
        "s3.existingSecret=x",
        "services.modelserver.engine=triton",
    )
    assert "manifest" in out and "config.pbtxt" in out and "modelRepository.type=pvc" in out


def requirements(name: str) -> set[str]:
    """The packages of docker/requirements/<name>.txt with its `-r` includes, by name."""
    out: set[str] = set()
    for line in (ROOT / "docker" / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out |= requirements(line[3:].strip())
        elif line:
            out.add(re.split(r"[\[<>=~! ]", line, maxsplit=1)[0].lower())
    return out


@pytest.mark.parametrize("service", sorted(USERS))
def test_every_image_the_chart_points_at_s3_has_s3fs(service: str) -> None:
    """services/storage/s3.py imports s3fs only when a URL is s3:// (the image's import check cannot see it)."""
    assert "s3fs" in requirements(f"{service}.txt")
    assert "s3fs" in (ROOT / "constraints.txt").read_text()

"""Every store on s3, on a real cluster (issue 19, item 1): the chart with its bundled S3 server (the
Versity S3 Gateway image flywheel.local/versitygw:v1.8.0, keys generated into <release>-flywheel-s3)
and charts/flywheel/ci/s3-values.yaml (object store, lake and model repository in one bucket).

1. `helm install --wait`: every service starts, which means each one reached its bucket (the services
   check it at start-up and stop on refused keys); the model server mounts no shared volume.
2. `helm test`: the chart's smoke test publishes its model to the s3 repository, predicts through the
   gateway, and finds the lake's Parquet in the bucket.
3. A model version published to s3 from a pod (the trainer's image: the repository's code, the same
   publishing the trainer does): the model server pulls it and serves v1; v2 published: the same pod,
   not restarted, serves v2 (the hot swap).
4. `helm upgrade` keeps the generated S3 keys, and the model server still serves v2 afterwards.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.k8s.conftest import (
    CHART,
    LOCAL_VALUES,
    create_namespace,
    describe_failures,
    helm,
    install,
    kubectl,
    port_forward,
    remove_namespace,
    secret_value,
    start_deps,
    step,
    wait_until,
)
from tests.k8s.serving import run_in_test_pod

NAMESPACE = "flywheel-s3"
RELEASE = "flywheel"
FULL = f"{RELEASE}-flywheel"
S3_VALUES = CHART / "ci" / "s3-values.yaml"
VALUES = ["-f", str(LOCAL_VALUES), "-f", str(S3_VALUES)]
POD_SELECTOR = f"app.kubernetes.io/name=modelserver,app.kubernetes.io/instance={RELEASE}"
MODELSERVER_PORT = 8000
MODEL = "s3-hot-swap"
FEATURES = 64  # the smoke test's model: 64 features in, 10 classes out

# Run in the chart's helm-test pod (the trainer's image; the s3 repository's URL and the keys by
# reference, as the chart renders them): a version of MODEL published to the s3 model repository the
# way the trainer publishes (files, then the manifest) and announced as production.
PUBLISH = """
import os, sys
from pathlib import Path
sys.path[:0] = ["/smoke", os.environ.get("SMOKE_APP", "/app")]
import smoke_test
from services.storage import model_store
from services.storage.s3 import open_bucket
smoke_test.MODEL = {model!r}
fs, root = open_bucket(os.environ["SMOKE_REMOTE_MODEL_REPOSITORY"])
local = Path("/tmp/publish")
version = smoke_test.write_model(local, {version})
model_store.publish_version(local, smoke_test.MODEL, version, fs, root)
smoke_test.announce(os.environ["SMOKE_KAFKA"], version, "production", local)
print(f"published {{smoke_test.MODEL}} v{{version}} to {{os.environ['SMOKE_REMOTE_MODEL_REPOSITORY']}}", flush=True)
"""


def publish(version: int) -> None:
    """The chart's `helm test` pod, rendered for this release, running PUBLISH for `version`."""
    script = PUBLISH.format(model=MODEL, version=version)
    run_in_test_pod(NAMESPACE, RELEASE, [], "s3-publish", script, value_files=[S3_VALUES])


def modelserver_pod() -> tuple[str, str, int]:
    """(name, uid, restarts) of the one model-server pod."""
    items = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", POD_SELECTOR, "-o", "json").stdout)["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in live]
    pod = live[0]
    restarts = sum(c["restartCount"] for c in pod["status"].get("containerStatuses", []))
    return pod["metadata"]["name"], pod["metadata"]["uid"], restarts


def served_version(server: str, token: str) -> str:
    """The version that answers an unversioned inference ('' while the model is not served)."""
    row = [0.0] * FEATURES
    row[3] = 1.0
    body = {"inputs": [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}
    try:
        r = httpx.post(
            f"{server}/v2/models/{MODEL}/infer", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    except httpx.HTTPError:
        return ""
    return str(r.json().get("model_version", "")) if r.status_code == 200 else ""


def s3_keys() -> dict[str, str]:
    out = kubectl("-n", NAMESPACE, "get", "secret", f"{FULL}-s3", "-o", "json")
    return {k: base64.b64decode(v).decode() for k, v in json.loads(out.stdout)["data"].items()}


@pytest.mark.timeout(1800)
def test_stores_on_the_bundled_s3_and_the_model_server_hot_swaps_from_it(cluster: str) -> None:
    with step("namespace and Kafka (PostgreSQL and the S3 server come with the chart)"):
        create_namespace(NAMESPACE)
        start_deps(NAMESPACE)
    try:
        with step("helm install --wait: every store on the bundled S3 server"):
            install(NAMESPACE, RELEASE, [], timeout_s=600, value_files=[S3_VALUES])
            spec = json.loads(
                kubectl("-n", NAMESPACE, "get", "deployment", f"{FULL}-modelserver", "-o", "json").stdout
            )["spec"]["template"]["spec"]
            assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v], spec["volumes"]
            keys = s3_keys()
            assert set(keys) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert len(keys["AWS_SECRET_ACCESS_KEY"]) >= 40
        with step("helm test: the smoke model published to s3 and served, the lake's Parquet in the bucket"):
            out = helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "10m", check=False)
            print(out.stdout)
            assert out.returncode == 0, out.stdout + out.stderr + describe_failures(NAMESPACE)
            assert "all checks passed" in out.stdout and "published flywheel-smoke" in out.stdout
        token = secret_value(NAMESPACE, RELEASE, "token-operator")
        with step(f"{MODEL} v1 published to s3 from a pod: the model server pulls and serves it"):
            publish(1)
            before = modelserver_pod()
            with port_forward(NAMESPACE, f"{FULL}-modelserver", MODELSERVER_PORT) as server:
                wait_until("the model server serving v1", lambda: served_version(server, token) == "1", 120)
        with step(f"{MODEL} v2 published: the same pod serves it without a restart"):
            publish(2)
            published = time.monotonic()
            with port_forward(NAMESPACE, f"{FULL}-modelserver", MODELSERVER_PORT) as server:
                wait_until("the model server serving v2", lambda: served_version(server, token) == "2", 120)
            print(f"    hot swap: v2 served {time.monotonic() - published:.1f} s after its publish finished")
            assert modelserver_pod() == before, (before, modelserver_pod())
        with step("helm upgrade keeps the generated S3 keys; v2 still served"):
            helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, *VALUES, "--wait", "--timeout", "10m", timeout=660)
            assert s3_keys() == keys
            with port_forward(NAMESPACE, f"{FULL}-modelserver", MODELSERVER_PORT) as server:
                wait_until("the model server serving v2", lambda: served_version(server, token) == "2", 180)
    finally:
        with step("namespace removed, volumes back in the pool"):
            remove_namespace(NAMESPACE, RELEASE)

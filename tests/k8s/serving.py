"""What the cluster tests that serve predictions share: a model of the test's own published through the
model repository and flywheel.models (the chart's smoke-test script, in a pod), and a client that sends
predictions for it through the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from tests.k8s.conftest import CHART, LOCAL_VALUES, describe_failures, helm, kubectl, wait_until

MODEL = "flywheel-smoke"  # charts/flywheel/files/smoke_test.py's model: 64 features in, 10 classes out
FEATURES = 64

# Run in the chart's helm-test pod (the trainer's image, the volume, Kafka's settings): the smoke
# test's own model written into /data/models and announced as production, and nothing removed.
PUBLISH_MODEL = """
import os, sys
from pathlib import Path
sys.path[:0] = ["/smoke", os.environ.get("SMOKE_APP", "/app")]
import smoke_test
repository = Path(os.environ["SMOKE_MODEL_REPOSITORY"])
version = smoke_test.write_model(repository)
smoke_test.announce(os.environ["SMOKE_KAFKA"], version, "production", repository)
print(f"published {smoke_test.MODEL} v{version}", flush=True)
"""


def run_in_test_pod(
    namespace: str, release: str, settings: list[str], name: str, script: str, value_files: Sequence[Path] = ()
) -> str:
    """The chart's `helm test` pod and its ConfigMap, rendered for this release (the local values, then
    `value_files`, then `settings`) and renamed after `name` (so `helm test`'s own stay untouched), running
    `script` (Python) instead of the smoke test; its output. Fails the test unless the script succeeds."""
    rendered = helm(
        "template", release, CHART, "-n", namespace, "-f", LOCAL_VALUES,
        *(a for f in value_files for a in ("-f", f)),
        *(a for s in settings for a in ("--set", s)),
        "--show-only", "templates/tests/test-smoke.yaml",
        timeout=120,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    pod = next(d for d in docs if d["kind"] == "Pod")
    for doc in docs:
        doc["metadata"].pop("annotations", None)  # helm's hook annotations: applied here, not by `helm test`
    for doc in docs:
        doc["metadata"]["name"] = f"{release}-flywheel-{name}"
    pod["spec"]["volumes"] = [
        {**v, "configMap": {"name": f"{release}-flywheel-{name}"}} if v["name"] == "smoke" else v
        for v in pod["spec"]["volumes"]
    ]
    pod["spec"]["containers"][0]["command"] = ["python", "-c", script]
    manifest = yaml.safe_dump_all(docs)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    pod_name = pod["metadata"]["name"]

    def finished() -> str:
        out = kubectl("-n", namespace, "get", "pod", pod_name, "-o", "jsonpath={.status.phase}", check=False).stdout
        return out if out in ("Succeeded", "Failed") else ""

    phase = wait_until(f"the {name} pod finished", finished, timeout_s=180, interval_s=2)
    logs = kubectl("-n", namespace, "logs", pod_name, check=False).stdout
    print(f"    {logs.strip()}")
    assert phase == "Succeeded", logs + describe_failures(namespace)
    kubectl("delete", "-n", namespace, "-f", "-", "--wait=true", stdin=manifest, timeout=120)
    return logs


def publish_model(namespace: str, release: str, settings: list[str], extra: str = "") -> str:
    """MODEL's next version written into the repository and announced; `extra`: more Python for the pod."""
    return run_in_test_pod(namespace, release, settings, "publish", PUBLISH_MODEL + extra)


def infer_body() -> dict:
    row = [0.0] * FEATURES
    row[3] = row[13] = 1.0  # class 3 for the smoke model's weights
    return {"inputs": [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}


class Client:
    """Predictions for MODEL through the gateway at `gateway` with the release's API key."""

    def __init__(self, gateway: str, api_key: str, in_flight: int = 4) -> None:
        self.url = f"{gateway}/v2/models/{MODEL}/infer"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        self.body = infer_body()
        self.in_flight = in_flight  # requests at once in send()

    def predict(self) -> str:
        """'' when answered, else why not."""
        try:
            r = self.http.post(self.url, json=self.body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"

    def send(self, n: int) -> list[str]:
        """n predictions, `in_flight` at a time; the failures."""
        with ThreadPoolExecutor(self.in_flight) as pool:
            return [f for f in pool.map(lambda _: self.predict(), range(n)) if f]

    def close(self) -> None:
        self.http.close()


def wait_serving(client: Client, what: str, timeout_s: float = 180) -> None:
    """Until 20 predictions in a row are answered (every model server has loaded the announced version)."""
    last: list[str] = []

    def serving() -> bool:
        last[:] = client.send(20)
        return not last

    try:
        wait_until(what, serving, timeout_s=timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last failures: {last[:3]}") from None

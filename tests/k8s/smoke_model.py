"""The chart smoke test's model on a release (for the scale-out and autoscaling tests): published
through the model repository and flywheel.models, and predicted through the gateway."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import yaml

from tests.k8s.conftest import CHART, LOCAL_VALUES, describe_failures, helm, kubectl, wait_until

MODEL = "flywheel-smoke"  # charts/flywheel/files/smoke_test.py's model: 64 features in, 10 classes out
FEATURES = 64
CLIENTS = 4  # requests in flight at once: the gateway picks the address with the fewest outstanding

# Run in the chart's helm-test pod (the trainer's image, the volume, Kafka's settings): the smoke
# test's own model written into /data/models and announced as production, and nothing removed.
PUBLISH = """
import os, sys
from pathlib import Path
sys.path[:0] = ["/smoke", os.environ.get("SMOKE_APP", "/app")]
import smoke_test
repository = Path(os.environ["SMOKE_MODEL_REPOSITORY"])
version = smoke_test.write_model(repository)
smoke_test.announce(os.environ["SMOKE_KAFKA"], version, "production", repository)
print(f"published {smoke_test.MODEL} v{version}", flush=True)
"""


def publish_smoke_model(namespace: str, release: str, settings: list[str]) -> None:
    """The chart's `helm test` pod and script, rendered for this release (installed with the local
    values and `settings`), running PUBLISH instead."""
    rendered = helm(
        "template", release, CHART, "-n", namespace, "-f", LOCAL_VALUES,
        *(a for s in settings for a in ("--set", s)),
        "--show-only", "templates/tests/test-smoke.yaml",
        timeout=120,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    pod = next(d for d in docs if d["kind"] == "Pod")
    for doc in docs:
        doc["metadata"].pop("annotations", None)  # helm's hook annotations: applied here, not by `helm test`
    pod["metadata"]["name"] = f"{release}-flywheel-publish"
    pod["spec"]["containers"][0]["command"] = ["python", "-c", PUBLISH]
    manifest = yaml.safe_dump_all(docs)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    name = pod["metadata"]["name"]

    def finished() -> str:
        out = kubectl("-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False).stdout
        return out if out in ("Succeeded", "Failed") else ""

    phase = wait_until("the publishing pod finished", finished, timeout_s=180, interval_s=2)
    logs = kubectl("-n", namespace, "logs", name, check=False).stdout
    print(f"    {logs.strip()}")
    assert phase == "Succeeded", logs + describe_failures(namespace)
    kubectl("delete", "-n", namespace, "-f", "-", "--wait=true", stdin=manifest, timeout=120)


def infer_body() -> dict:
    row = [0.0] * FEATURES
    row[3] = row[13] = 1.0  # class 3 for the smoke model's weights
    return {"inputs": [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}


class Client:
    """Predictions through the gateway's port-forward with the release's API key."""

    def __init__(self, gateway: str, api_key: str) -> None:
        self.url = f"{gateway}/v2/models/{MODEL}/infer"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        self.body = infer_body()

    def predict(self) -> str:
        """'' when answered, else why not."""
        try:
            r = self.http.post(self.url, json=self.body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"

    def send(self, n: int) -> list[str]:
        """n predictions, CLIENTS at a time; the failures."""
        with ThreadPoolExecutor(CLIENTS) as pool:
            return [f for f in pool.map(lambda _: self.predict(), range(n)) if f]

    def close(self) -> None:
        self.http.close()

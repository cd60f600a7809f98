"""`flywheel up --with-example-model`: serve the example project's model on a freshly started stack.

Digits from scikit-learn (shipped in the package, nothing downloaded) go the way a user's labels
would: `POST /v1/labels` to ingest, into the lake, a snapshot, a training job on the trainer
(the demo's family and hyperparameters, so it beats its baselines), then the promotion gate to
production; it returns once the model server has the version loaded. About a minute on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from services.cli.demo.config import DEMO_FAMILY, DEMO_HYPERPARAMETERS, MODEL
from services.cli.demo.data import Digits, native_labels
from services.cli.demo.endpoints import Endpoints, check, wait_for
from services.devstack.credentials import StackCredentials
from services.devstack.supervisor import Component

LABELS = 1500
BATCH = 250


def serve_example_model(
    components: list[Component], credentials: StackCredentials, progress: Callable[[str], None], seed: int = 0
) -> str:
    """Label, snapshot, train, promote and load the example model (calling as the operator); return its version."""
    ep = Endpoints.from_components(components, credentials)
    digits = Digits.load(LABELS, seed)
    with ep.client(60) as http:
        versions = check(http.get(f"{ep.http['trainer']}/v1/models", params={"model": MODEL}), "models")
        served = [v for v in versions if v.get("stage") == "production"]
        if served:
            progress(f"example model {MODEL} v{served[0]['version']} is already in production")
            return str(served[0]["version"])
        lake = f"{ep.http['lake']}/v1/stats"
        before = _lake_labels(http, lake)
        for start in range(0, len(digits.label_x), BATCH):
            x, y = digits.label_x[start : start + BATCH], digits.label_y[start : start + BATCH]
            labels = native_labels(x, y, f"example-{start}")
            check(http.post(f"{ep.http['ingest']}/v1/labels", json=labels), "ingest example labels")
        wait_for(
            lambda: _lake_labels(http, lake) >= before + len(digits.label_x), 120, "the example labels in the lake"
        )
        progress(f"{len(digits.label_x)} example labels (scikit-learn digits) ingested")
        split = {"train": 0.7, "validation": 0.15, "test": 0.15, "salt": f"example-{seed}"}
        snap = check(
            http.post(f"{ep.http['lake']}/v1/snapshots", json={"split": split, "description": "example model"}),
            "snapshot",
        )
        body = {
            "model": MODEL,
            "snapshot_id": snap["snapshot_id"],
            "model_family": DEMO_FAMILY,
            "hyperparameters": {**DEMO_HYPERPARAMETERS, "seed": str(seed)},
        }
        job = check(http.post(f"{ep.http['trainer']}/v1/jobs", json=body), "training job")
        progress(f"training {MODEL} ({DEMO_FAMILY}) on snapshot {snap['snapshot_id']}: job {job['job_id']}")
        url = f"{ep.http['trainer']}/v1/jobs/{job['job_id']}"
        job = wait_for(lambda: (j := check(http.get(url), "job"))["state"] in _DONE and j, 600, "the training job", 1.0)
        if job["state"] != "succeeded":
            raise RuntimeError(f"example training job {job['state']}: {job.get('reason') or job.get('message')}")
        version = str(job["model_version"])
        check(
            http.post(
                f"{ep.http['trainer']}/v1/models/{MODEL}/versions/{version}/promote", json={"stage": "production"}
            ),
            f"promote {MODEL} v{version}",
        )
        ready = f"{ep.http['modelserver']}/v2/models/{MODEL}/versions/{version}/ready"
        wait_for(lambda: http.get(ready).status_code == 200, 120, f"the model server to load {MODEL} v{version}")
    progress(f"example model {MODEL} v{version} in production and loaded")
    return version


_DONE = ("succeeded", "failed", "cancelled")


def _lake_labels(http: httpx.Client, stats_url: str) -> int:
    stats = check(http.get(stats_url), "lake stats")
    return next((int(t["distinct_events"]) for t in stats if t["topic"] == "flywheel.labels"), 0)

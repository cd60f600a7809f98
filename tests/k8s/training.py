"""A training Job on the cluster, end to end through the chart's wiring: digits labels into ingest, the
lake (Parquet on the shared volume) cuts a snapshot, the trainer runs the job as a Kubernetes Job that
mounts the same volume and writes /data/models, the model servers load the version announced on
flywheel.models, and the gateway serves it. Services are reached with `kubectl port-forward`."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
from sklearn.datasets import load_digits

from tests.k8s.conftest import KUBECTL, kubectl, wait_until

MODEL = "digits-k8s"
LABELS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def port_forward(namespace: str, service: str, port: int) -> Iterator[str]:
    local = free_port()
    proc = subprocess.Popen(
        [str(KUBECTL), "-n", namespace, "port-forward", f"svc/{service}", f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{local}"
    try:
        wait_until(f"port-forward to {service}", lambda: _answers(url), timeout_s=30, interval_s=0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def metric(url: str, family: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def train_and_serve(namespace: str, release: str, api_key: str) -> dict:
    """Returns what was checked, for the test's output."""
    full = f"{release}-flywheel"
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    with (
        port_forward(namespace, f"{full}-ingest", 8100) as ingest,
        port_forward(namespace, f"{full}-lake", 8200) as lake,
        port_forward(namespace, f"{full}-trainer", 8300) as trainer,
        port_forward(namespace, f"{full}-gateway", 8080) as gateway,
    ):
        before = metric(lake, "flywheel_lake_rows_written_total", topic="flywheel.labels")
        batch = {
            "labels": [
                {"example_id": f"k8s-{i}", "label": str(int(y[i])), "annotator": "tests/k8s", "features": x[i].tolist()}
                for i in range(LABELS)
            ]
        }
        r = httpx.post(ingest + "/v1/labels", json=batch, timeout=60)
        assert r.status_code == 200, r.text
        wait_until(
            "the labels in the lake",
            lambda: metric(lake, "flywheel_lake_rows_written_total", topic="flywheel.labels") >= before + LABELS,
            timeout_s=120,
        )
        split = {"train": 0.7, "validation": 0.15, "test": 0.15}
        snap = httpx.post(lake + "/v1/snapshots", json={"split": split, "description": "tests/k8s"}, timeout=120)
        assert snap.status_code == 201, snap.text
        snapshot = snap.json()["snapshot_id"]
        body = {
            "model": MODEL,
            "snapshot_id": snapshot,
            "model_family": "digits_mlp",
            "hyperparameters": {"max_epochs": "30"},
        }
        job = httpx.post(trainer + "/v1/jobs", json=body, timeout=60).json()
        assert job.get("runner") == "kubernetes", job
        url = f"{trainer}/v1/jobs/{job['job_id']}"
        done = wait_until(
            "the training job finished",
            lambda: (j := httpx.get(url, timeout=10).json())["state"] in ("succeeded", "failed", "cancelled") and j,
            timeout_s=900,
            interval_s=3,
        )
        assert done["state"] == "succeeded", done
        version = str(done["model_version"])
        selector = "app.kubernetes.io/component=training-job"
        k8s_job = kubectl("-n", namespace, "get", "jobs", "-l", selector, "-o", "name")
        assert k8s_job.stdout.strip(), "the trainer ran no Kubernetes Job"

        held_out = slice(1500, 1700)
        data = x[held_out].ravel().tolist()
        infer = {"inputs": [{"name": "features", "shape": [200, 64], "datatype": "FP32", "data": data}]}

        def served() -> dict | None:
            r = httpx.post(
                f"{gateway}/v2/models/{MODEL}/versions/{version}/infer",
                json=infer,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            )
            return r.json() if r.status_code == 200 else None

        answer = wait_until(f"the gateway serving {MODEL} v{version}", served, timeout_s=120)
        predicted = np.array(answer["outputs"][0]["data"]).reshape(200, -1).argmax(axis=1)
        accuracy = float((predicted == y[held_out]).mean())
        assert accuracy > 0.5, accuracy  # chance is 0.1: a model trained on these labels, not a stub
        return {"job": job["job_id"], "k8s_job": k8s_job.stdout.strip(), "version": version, "accuracy": accuracy}

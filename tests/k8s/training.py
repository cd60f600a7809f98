"""A training Job on the cluster, end to end through the chart's wiring: digits labels into ingest, the
lake (Parquet on the shared volume) cuts a snapshot, the trainer runs the job as a Kubernetes Job that
mounts the same volume and writes /data/models, the model servers load the version announced on
flywheel.models, and the gateway serves it. Services are reached with `kubectl port-forward`."""

from __future__ import annotations

import json

import httpx
import numpy as np
from sklearn.datasets import load_digits

from services.projects import load_spec_file, spec_json
from tests.k8s.conftest import kubectl, port_forward, wait_until
from tests.support.projects import example_spec_file

MODEL = "digits-k8s"
DIGITS_SPEC = example_spec_file("digits")
LABELS = 600
FINISHED = ("succeeded", "failed", "cancelled")


def metric(url: str, family: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def train_and_serve(namespace: str, release: str, api_key: str, labeler: str, operator: str) -> dict:
    """Returns what was checked, for the test's output. labeler, operator: the service tokens from the
    release's Secret (labels go to ingest as the labeler; the lake and trainer admit the operator)."""
    as_labeler = {"Authorization": f"Bearer {labeler}"}
    as_operator = {"Authorization": f"Bearer {operator}"}
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
        # The chart registers no project: this one is the digits example under the test's model name,
        # created through the trainer's API and learnt by ingest and the lake from flywheel.projects.
        spec = json.loads(spec_json(load_spec_file(DIGITS_SPEC)))
        created = httpx.post(trainer + "/v1/projects", json={**spec, "name": MODEL}, headers=as_operator, timeout=60)
        assert created.status_code in (200, 201), created.text
        wait_until(
            "ingest to learn the project",
            lambda: any(
                p["name"] == MODEL for p in httpx.get(ingest + "/v1/projects", headers=as_operator, timeout=10).json()
            ),
            timeout_s=120,
        )
        before = metric(lake, "flywheel_lake_rows_written_total", topic="flywheel.labels")
        batch = {
            "project": MODEL,
            "labels": [
                {"example_id": f"k8s-{i}", "label": str(int(y[i])), "annotator": "tests/k8s", "features": x[i].tolist()}
                for i in range(LABELS)
            ],
        }
        refused = httpx.post(ingest + "/v1/labels", json=batch, timeout=60)
        assert refused.status_code == 401, refused.text  # finding 3: no label without the labeler's token
        r = httpx.post(ingest + "/v1/labels", json=batch, headers=as_labeler, timeout=60)
        assert r.status_code == 200, r.text
        wait_until(
            "the labels in the lake",
            lambda: metric(lake, "flywheel_lake_rows_written_total", topic="flywheel.labels") >= before + LABELS,
            timeout_s=120,
        )
        split = {"train": 0.7, "validation": 0.15, "test": 0.15}
        snap = wait_until(
            "a snapshot of the project (the lake learns it from flywheel.projects)",
            lambda: (
                (
                    r := httpx.post(
                        lake + "/v1/snapshots",
                        json={"split": split, "description": "tests/k8s", "project": MODEL},
                        headers=as_operator,
                        timeout=120,
                    )
                ).status_code
                == 201  # Created
                and r
            ),
            timeout_s=120,
        )
        snapshot = snap.json()["snapshot_id"]
        body = {
            "model": MODEL,
            "project": MODEL,
            "snapshot_id": snapshot,
            "model_family": "mlp",
            "hyperparameters": {"max_epochs": "30"},
        }
        job = httpx.post(trainer + "/v1/jobs", json=body, headers=as_operator, timeout=60).json()
        assert job.get("runner") == "kubernetes", job
        url = f"{trainer}/v1/jobs/{job['job_id']}"
        done = wait_until(
            "the training job finished",
            lambda: (j := httpx.get(url, headers=as_operator, timeout=10).json())["state"] in FINISHED and j,
            timeout_s=900,
            interval_s=3,
        )
        assert done["state"] == "succeeded", done
        version = str(done["model_version"])
        selector = "app.kubernetes.io/component=training-job"
        k8s_job = kubectl("-n", namespace, "get", "jobs", "-l", selector, "-o", "name")
        assert k8s_job.stdout.strip(), "the trainer ran no Kubernetes Job"
        # The Job's spec carries no secret and its pod no Kubernetes credential (finding 15).
        spec = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", selector, "-o", "json").stdout)["items"][0]
        pod = spec["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["FLYWHEEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{full}-secrets",
            "key": "database-url",
        }, env["FLYWHEEL_DATABASE_URL"]
        assert pod["serviceAccountName"] == f"{full}-training-job" and pod["automountServiceAccountToken"] is False

        held_out = slice(1500, 1700)
        rows = x[held_out]
        batch_size = 50  # the model's max_batch_size is 64: the model server refuses more in one request

        last: list[str] = []

        def served() -> list[float] | None:
            outputs: list[float] = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                infer = {
                    "inputs": [
                        {
                            "name": "features",
                            "shape": list(chunk.shape),
                            "datatype": "FP32",
                            "data": chunk.ravel().tolist(),
                        }
                    ]
                }
                r = httpx.post(
                    f"{gateway}/v2/models/{MODEL}/versions/{version}/infer",
                    json=infer,
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=30,
                )
                last[:] = [f"{r.status_code} {r.text[:500]}"]
                if r.status_code != 200:
                    return None
                outputs += r.json()["outputs"][0]["data"]
            return outputs

        try:
            answer = wait_until(f"the gateway serving {MODEL} v{version}", served, timeout_s=120)
        except AssertionError as exc:
            logs = [
                kubectl("-n", namespace, "logs", f"deployment/{full}-{name}", "--tail=25", check=False).stdout
                for name in ("trainer", "modelserver", "gateway")
            ]
            raise AssertionError(f"{exc}; the gateway's last answer: {last}\n" + "\n".join(logs)) from None
        predicted = np.array(answer).reshape(len(rows), -1).argmax(axis=1)
        accuracy = float((predicted == y[held_out]).mean())
        assert accuracy > 0.5, accuracy  # chance is 0.1: a model trained on these labels, not a stub
        return {"job": job["job_id"], "k8s_job": k8s_job.stdout.strip(), "version": version, "accuracy": accuracy}

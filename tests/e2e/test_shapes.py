"""A colour-image project end to end on the real services (Tansu, ingest, lake, trainer, model server,
gateway, monitor as processes, and the Label Studio-compatible file server): examples/shapes — JPEG,
PNG and WebP images of 64-128 px a side, not the size the model takes — labelled half through the
native API and half as Label Studio webhooks whose tasks point at `/data/upload/…` files that ingest
fetches with the Label Studio token; a bad image refused naming the field, a task whose file is gone
dead-lettered; a snapshot, the image CNN beating its baselines, served, images through the gateway's
`:predict`, no false alarm on clean traffic and drift found after the shift. Then the same model
comes back as a model "trained elsewhere" through `POST /v1/models/shapes/versions` (what `flywheel
models deploy` sends): checked against the project, measured, judged by the gate, served."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from services.cli.demo.project_data import ProjectData
from services.cli.demo.project_story import ProjectConfig, ProjectStory, verdict
from tests.e2e.conftest import Stack
from tests.support.projects import EXAMPLES


def test_colour_images_labelled_through_label_studio_go_around_the_flywheel(stack: Stack, tmp_path: Path) -> None:
    data = ProjectData.load(EXAMPLES / "shapes", make_into=tmp_path / "shapes-data")
    formats = {e.name.rsplit(".", 1)[-1] for e in data.examples}
    assert formats == {"jpg", "png", "webp"}
    cfg = ProjectConfig(n_labels=1400, clean_predictions=600, seed=0, timeout_s=240)
    story = ProjectStory(
        data, stack.ep, stack.api_key, stack.webhook_token, Console(quiet=True), cfg, stack.label_studio
    )
    try:
        results = story.run().values
        # A bad instance at the gateway is refused naming it; a good one is answered.
        good = story.data.instance(story.traffic[0])
        r = httpx.post(
            f"{stack.ep.http['gateway']}/v1/models/shapes:predict",
            json={"instances": [good, {"b64": base64.b64encode(b"GIF89a not a picture").decode()}]},
            headers=story.auth,
        )
        assert r.status_code == 400 and "instances[1]" in r.text, r.text
        assert verdict(results) == [], results
        _check_the_turn(stack, story, results)
        _deploy_the_same_model_from_elsewhere(stack, story, results)
    finally:
        story.close()


def _check_the_turn(stack: Stack, story: ProjectStory, results: dict) -> None:
    assert results["labels_lost"] == 0 and results["bad_inputs_refused"] == 2
    assert results["fetches_dead_lettered"] == 1
    assert results["family"] == "image_cnn" and results["margin_over_best_baseline"] > 0.05
    assert results["v1_test_accuracy"] > 0.6 and results["live_accuracy"] > 0.6
    assert results["clean_windows"] >= 3 and results["clean_windows_drifted"] == 0
    # Ingest fetched the uploaded files from the Label Studio server with its token: 200s, and the 404.
    fetched = [
        (path, status) for method, path, status in stack.label_studio.requests if path.startswith("/data/upload/")
    ]
    assert sum(status == 200 for _, status in fetched) >= len(story.labelled) // 2
    assert any(status == 404 and "gone" in path for path, status in fetched)

    snapshot = results["snapshot"]
    manifest = json.loads((stack.home / "lake" / "snapshots" / snapshot / "manifest.json").read_text())
    assert manifest["project"] == "shapes"
    card = json.loads((stack.home / "models" / "shapes" / results["v1"] / "flywheel.json").read_text())
    assert card["input_spec"]["channels"] == 3 and card["input_spec"]["height"] == 32
    assert card["lineage"] == "trained"


def _deploy_the_same_model_from_elsewhere(stack: Stack, story: ProjectStory, results: dict) -> None:
    trainer = stack.ep.http["trainer"]
    op = stack.ep.credentials.bearer("operator")  # the trainer admits trusted callers only
    v1 = results["v1"]
    exported = (stack.home / "models" / "shapes_torchscript" / v1 / "model.pt").read_bytes()
    url = f"{trainer}/v1/models/shapes/versions"

    # A model for another input is refused naming the difference; nothing is registered.
    digits_pt = next((stack.home / "models").glob("digits_torchscript/*/model.pt"), None)
    before = httpx.get(f"{trainer}/v1/models", params={"model": "shapes"}, headers=op).json()
    bad = httpx.post(url, content=b"\x00not a model", headers=op, timeout=120)
    assert bad.status_code == 400 and "neither an ONNX model nor a TorchScript archive" in bad.text
    # ... and by the command a user types, which names the project and the reason.
    garbage = stack.home / "not-a-model.onnx"
    garbage.write_bytes(b"\x00not a model")
    cli = [sys.executable, "-m", "services.cli", "models", "deploy", str(garbage), "--project", "shapes"]
    # rich wraps at 80 columns without a terminal; the CLI calls as the operator
    wide = {**os.environ, "COLUMNS": "400", "FLYWHEEL_SERVICE_TOKEN": stack.ep.credentials.token("operator")}
    done = subprocess.run(
        [*cli, "--trainer-url", trainer], capture_output=True, text=True, timeout=120, check=False, env=wide
    )
    assert done.returncode == 1 and "neither an ONNX model nor a TorchScript archive" in done.stdout, done
    listed = subprocess.run(
        [sys.executable, "-m", "services.cli", "projects", "list", "--trainer-url", trainer],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=wide,
    )
    assert listed.returncode == 0 and "shapes" in listed.stdout and "image" in listed.stdout, listed
    if digits_pt is not None:
        wrong = httpx.post(url, content=digits_pt.read_bytes(), headers=op, timeout=120)
        assert wrong.status_code == 400 and "model:" in wrong.text
    assert httpx.get(f"{trainer}/v1/models", params={"model": "shapes"}, headers=op).json() == before

    # The trained network as TorchScript from elsewhere: measured on a fresh snapshot; as good as v1,
    # so the gate refuses production (it must beat v1) until forced.
    r = httpx.post(url, content=exported, headers=op, timeout=600)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lineage"] == "external" and body["model_family"] == "external_torchscript"
    assert body["measured_on"] and body["metrics"]["test_accuracy"] > 0.6
    assert any(f"production v{v1}" in reason for reason in body["gate"]), body["gate"]
    version = str(body["version"])
    refused = httpx.post(
        f"{trainer}/v1/models/shapes/versions/{version}/promote", json={"stage": "production"}, headers=op
    )
    assert refused.status_code == 409
    forced = httpx.post(
        f"{trainer}/v1/models/shapes/versions/{version}/promote",
        json={"stage": "production", "force": True},
        headers=op,
    )
    assert forced.status_code == 200, forced.text

    # Served: the gateway answers shapes' images from the external version, as v1 did.
    deadline = time.monotonic() + 120
    answer: dict = {}
    while time.monotonic() < deadline:
        answer = story.predict(story.traffic[:20])
        if str(answer.get("model_version")) == version:
            break
        time.sleep(1)
    assert str(answer.get("model_version")) == version, answer
    correct = sum(p["label"] == e.label for p, e in zip(answer["predictions"], story.traffic[:20], strict=True))
    assert correct >= 10

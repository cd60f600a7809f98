"""A text project end to end on the real services: examples/tickets (short customer-support messages)
labelled through the native API and Label Studio webhooks (the text inline in the task, under the
spec's data key and control), an empty text refused naming the field, a snapshot, the built-in text
family (hashed n-grams, TF-IDF inside the served graph, an MLP head) beating its baselines without
user code, served, strings through the gateway's `:predict`, no false alarm on clean traffic and
drift found when the messages start arriving from a new channel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from rich.console import Console

from services.cli.demo.project_data import ProjectData
from services.cli.demo.project_story import ProjectConfig, ProjectStory, verdict
from tests.e2e.conftest import Stack
from tests.support.projects import EXAMPLES
from tests.support.waiting import wait_until


def test_short_texts_go_around_the_flywheel(stack: Stack, tmp_path: Path) -> None:
    data = ProjectData.load(EXAMPLES / "tickets", make_into=tmp_path / "tickets-data")
    cfg = ProjectConfig(n_labels=1200, clean_predictions=600, seed=0, timeout_s=240)
    story = ProjectStory(
        data, stack.ep, stack.api_key, stack.webhook_token, Console(quiet=True), cfg, stack.label_studio
    )
    try:
        results = story.run().values
        good = story.data.instance(story.traffic[0])
        r = httpx.post(
            f"{stack.ep.http['gateway']}/v1/models/tickets:predict",
            json={"instances": [good, 42]},
            headers=story.auth,
        )
        assert r.status_code == 400 and "instances[1]" in r.text and "must be a string" in r.text, r.text
        answer = story.predict(story.traffic[:1])
        assert answer["predictions"][0]["label"] in data.spec.labels
        _import_a_label_studio_project(stack, story)
    finally:
        story.close()
    assert verdict(results) == [], results
    assert results["labels_lost"] == 0 and results["bad_inputs_refused"] == 2
    assert results["family"] == "text_mlp" and results["margin_over_best_baseline"] > 0.05
    assert results["live_accuracy"] > 0.8
    assert results["clean_windows"] >= 3 and results["clean_windows_drifted"] == 0
    assert results["drifted_tests"], results

    card = json.loads((stack.home / "models" / "tickets" / results["v1"] / "flywheel.json").read_text())
    assert card["input_spec"]["kind"] == "text" and card["input_spec"]["ngram_max"] == 2
    assert card["model_family"] == "text_mlp" and card["labels"] == ["billing", "delivery", "account", "bug"]


def _import_a_label_studio_project(stack: Stack, story: ProjectStory) -> None:
    """`flywheel projects import-label-studio`: a whole Label Studio project's export, fetched from its API."""
    new = story.traffic[:30]  # never labelled so far
    tasks = [
        {
            "id": 500_000 + i,
            "data": story.data.task_data(ex),
            "annotations": [
                {
                    "id": 600_000 + i,
                    "result": [
                        {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [ex.label]}}
                    ],
                    "was_cancelled": False,
                    "completed_by": 3,
                    "created_at": "2026-11-30T10:00:00Z",
                    "updated_at": "2026-11-30T10:00:00Z",
                }
            ],
        }
        for i, ex in enumerate(new)
    ]
    tasks.append(
        {"id": 599_999, "data": story.data.task_data(new[0]), "annotations": [{"id": 699_999, "was_cancelled": True}]}
    )
    stack.label_studio.exports[7] = tasks
    before = story.lake_labels()
    cmd = [sys.executable, "-m", "services.cli", "projects", "import-label-studio", "tickets"]
    cmd += ["--label-studio-url", stack.label_studio_url, "--label-studio-project", "7"]
    cmd += ["--label-studio-token", stack.label_studio.api_token]
    cmd += ["--ingest-url", stack.ep.http["ingest"]]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # as the stack's operator (ingest admits trusted callers only)
        env={**os.environ, "COLUMNS": "300", "FLYWHEEL_SERVICE_TOKEN": stack.ep.credentials.token("operator")},
    )
    assert done.returncode == 0, done
    assert "31 tasks imported into tickets: 30 labels accepted, 0 queued" in done.stdout and "1 ignored" in done.stdout
    assert ("GET", "/api/projects/7/export?exportType=JSON", 200) in stack.label_studio.requests
    wait_until(lambda: story.lake_labels() >= before + 30, timeout_s=60, message="the imported labels in the lake")

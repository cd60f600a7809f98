"""A tabular project end to end on the real services (Tansu, ingest, lake, trainer, model server,
gateway, monitor as processes): a mixed-type table (examples/strokes: ints, a category, a nullable
float) labelled through the native API and Label Studio webhooks, bad rows refused naming the
column, a snapshot whose profile tests the category per level and the nulls on their own, the
tabular MLP with category embeddings beating logistic regression, served, JSON rows through the
gateway's `:predict`, and drift found after a shift with none on clean traffic."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from rich.console import Console

from services.cli.demo.project_data import ProjectData
from services.cli.demo.project_story import ProjectConfig, ProjectStory, verdict
from tests.e2e.conftest import Stack
from tests.support.projects import EXAMPLES


def test_a_mixed_type_table_goes_around_the_flywheel(stack: Stack, tmp_path: Path) -> None:
    data = ProjectData.load(EXAMPLES / "strokes", make_into=tmp_path / "strokes-data")
    cfg = ProjectConfig(n_labels=1400, clean_predictions=600, seed=0, timeout_s=240)
    story = ProjectStory(
        data, stack.ep, stack.api_key, stack.webhook_token, Console(quiet=True), cfg, stack.label_studio
    )
    try:
        results = story.run().values
        # A bad instance at the gateway is refused naming it and its column; the OIP routes are unchanged.
        good = dict(story.traffic[0].input)
        r = httpx.post(
            f"{stack.ep.http['gateway']}/v1/models/strokes:predict",
            json={"instances": [good, {**good, "holes": "three"}]},
            headers=story.auth,
        )
        assert r.status_code == 400 and "instances[1].holes" in r.text and "not one of its values" in r.text
    finally:
        story.close()
    assert verdict(results) == [], results
    assert results["labels_lost"] == 0 and results["bad_inputs_refused"] == 3
    assert results["family"] == "tabular_mlp" and results["margin_over_best_baseline"] > 0.01
    assert results["clean_windows"] >= 3 and results["clean_windows_drifted"] == 0
    assert any("(chi2)" in t for t in results["drifted_tests"]), results["drifted_tests"]

    snapshot = results["snapshot"]
    lake_root = stack.home / "lake" / "snapshots" / snapshot
    manifest = json.loads((lake_root / "manifest.json").read_text())
    profile = json.loads((lake_root / "profile.json").read_text())
    assert manifest["project"] == "strokes" and manifest["feature_dim"] == 20
    assert profile["features"]["holes"]["kind"] == "categorical" and profile["features"]["holes"]["levels"] == [0, 1, 2]
    assert profile["features"]["slant"]["nulls"] > 0 and "slant:null" in profile["derived"]
    card = json.loads((stack.home / "models" / "strokes" / results["v1"] / "flywheel.json").read_text())
    assert card["project"] == "strokes" and card["input_spec"]["kind"] == "tabular"
    assert set(card["encoders"]["categories"]["holes"]["embedding_rows"]) == {"none", "one", "two_or_more"}
    assert card["encoders"]["numeric"]["slant"]["null_indicator"] is True

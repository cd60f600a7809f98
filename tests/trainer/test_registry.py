"""The registry on SQLite and PostgreSQL: lineage, stages, and a promotion gate that says why it refuses."""

from __future__ import annotations

import pytest

from services.storage import Database, migrate
from services.trainer.errors import PromotionRefused
from services.trainer.registry import Registry, VersionRecord
from services.trainer.tables import MIGRATIONS


def _version(v: int, combined: float, baseline: float = 0.96) -> VersionRecord:
    return VersionRecord(
        model="digits",
        version=v,
        stage="candidate",
        model_family="digits_mlp",
        snapshot_id=f"snap-{v}",
        git_commit="abc123",
        job_id=f"job-{v}",
        hyperparameters={"lr": "0.0003"},
        metrics={
            "test_combined": combined,
            "baseline_best_test_combined": baseline,
            "baseline_logistic_regression_test_combined": baseline,
            "baseline_majority_test_combined": 0.1,
            "test_accuracy": combined,
        },
        artifacts={"onnx": f"/models/digits/{v}/model.onnx"},
    )


@pytest.fixture
def registry(database_url: str):
    migrate(database_url, [MIGRATIONS])
    db = Database(database_url)
    events: list = []
    # The publish callback collects events here; the service test reads real ones from Kafka.
    yield Registry(db, repository_uri="file:///models", margin=0.005, publish=events.append), events
    db.close()


def test_gate_refuses_a_model_worse_than_baseline_and_production(registry) -> None:
    reg, events = registry
    reg.register(_version(1, combined=0.95))  # below the logistic-regression baseline
    with pytest.raises(
        PromotionRefused,
        match=r"does not beat the best baseline \(logistic_regression, 0.9[0-9]+\) by the margin 0.005",
    ):
        reg.promote("digits", "1", "production")
    reg.register(_version(2, combined=0.98))
    assert reg.promote("digits", "2", "production").stage == "production"
    reg.register(_version(3, combined=0.982))  # better, but not by the margin
    with pytest.raises(PromotionRefused, match=r"does not beat production v2 \(0.9800 as recorded\)"):
        reg.promote("digits", "3", "canary")
    reg.register(_version(4, combined=0.99))
    assert reg.promote("digits", "4", "canary").stage == "canary"
    assert reg.promote("digits", "4", "production").stage == "production"
    stages = {v.version: v.stage for v in reg.list("digits")}
    assert stages == {1: "candidate", 2: "archived", 3: "candidate", 4: "production"}
    forced = reg.promote("digits", "1", "canary", force=True)  # an operator's explicit override
    assert forced.stage == "canary"
    published = [(e.version, e.stage) for e in events]
    assert ("2", "archived") in published and published[-2:] == [("4", "production"), ("1", "canary")]
    assert all(e.repository_uri == "file:///models" and e.meta.event_id for e in events)
    v4 = reg.get("digits", 4)
    assert (v4.snapshot_id, v4.git_commit, v4.hyperparameters, v4.artifacts["onnx"]) == (
        "snap-4",
        "abc123",
        {"lr": "0.0003"},
        "/models/digits/4/model.onnx",
    )


def test_gate_prefers_production_measured_on_the_same_split(registry) -> None:
    reg, _ = registry
    reg.register(_version(1, combined=0.97))
    reg.promote("digits", "1", "production")
    candidate = _version(2, combined=0.975)
    # Production recorded 0.97 on its own snapshot, but scored 0.972 on this candidate's test split.
    candidate.metrics.update(production_version=1.0, production_test_combined=0.972)
    reg.register(candidate)
    with pytest.raises(PromotionRefused, match=r"production v1 \(0.9720 on this version's test split\)"):
        reg.promote("digits", "2", "production")

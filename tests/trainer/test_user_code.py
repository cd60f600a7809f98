"""A project's own code, both levels, run by the real training job on a digits snapshot: the example
projects examples/digits/own-model.yaml (`build_model`: Flywheel's loop, baselines, export, gate) and
own-training.yaml (`train(context)`: the project's loop writes TorchScript; Flywheel checks, measures
and registers it). And what goes wrong in a project's code is reported, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from services.projects import ProjectSpec, load_spec, spec_json
from services.storage import Database, migrate
from services.trainer.errors import TrainerError
from services.trainer.export import ExportOptions
from services.trainer.job_run import JobContext, JobSpec, run_job
from services.trainer.registry import Registry
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric
from tests.support.projects import EXAMPLES
from tests.trainer.conftest import COMBINED


@pytest.fixture()
def ctx(tmp_path: Path) -> JobContext:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, [MIGRATIONS])
    registry = Registry(Database(url), repository_uri=(tmp_path / "models").as_uri())
    return JobContext(
        repository=tmp_path / "models",
        reports=tmp_path / "reports",
        registry=registry,
        combined=CombinedMetric.parse(COMBINED),
        export=ExportOptions(exporter="torchscript", int8=False, mar=False),
        threads=1,
    )


def _job(spec: ProjectSpec, uri: str) -> JobSpec:
    return JobSpec(
        f"job-{spec.name}",
        spec.name,
        spec.family_name(),
        "snap-digits",
        uri,
        hyperparameters=dict(spec.model.hyperparameters),
        project=spec.name,
        project_version=1,
        project_spec=spec_json(spec),
    )


def _example(name: str) -> ProjectSpec:
    path = EXAMPLES / "digits" / name
    return load_spec(path.read_bytes(), path.parent)


def test_build_model_is_trained_by_flywheel_and_judged_by_the_gate(ctx: JobContext, digits_uri: str) -> None:
    spec = _example("own-model.yaml")
    out = run_job(_job(spec, digits_uri), ctx)
    # The network is the project's (a conv layer then the head, width from the spec), trained by the loop.
    assert out.model is not None and any(isinstance(m, nn.Conv2d) for m in out.model.modules())
    assert next(m.out_features for m in out.model.modules() if isinstance(m, nn.Linear)) == 64
    rec = ctx.registry.get(spec.name, out.version)
    assert rec.model_family == "custom" and rec.lineage == "trained"
    assert out.metrics["test_accuracy"] > 0.85 and "baseline_best_test_combined" in out.metrics
    assert out.report["overfit_check"]["batch_accuracy"] == 1.0  # the course practice ran on it too
    beats = out.metrics["test_combined"] >= out.metrics["baseline_best_test_combined"] + ctx.registry.margin
    assert (ctx.registry.gate(rec) == []) == beats
    assert (ctx.repository / spec.name / out.version / "model.onnx").is_file()


def test_train_context_writes_a_model_that_flywheel_measures_and_registers(ctx: JobContext, digits_uri: str) -> None:
    spec = _example("own-training.yaml")
    out = run_job(_job(spec, digits_uri), ctx)
    rec = ctx.registry.get(spec.name, out.version)
    assert rec.model_family == "custom" and rec.lineage == "trained" and rec.snapshot_id == "snap-digits"
    # Flywheel's own numbers on the test split, the baselines beside them, and the code's own number kept.
    assert out.metrics["test_accuracy"] > 0.85
    assert {"baseline_logistic_regression_test_combined", "baseline_majority_test_combined"} <= set(out.metrics)
    assert 0.8 < out.metrics["user_validation_accuracy"] <= 1.0
    folder = ctx.repository / spec.name / out.version
    card = json.loads((folder / "flywheel.json").read_text())
    assert card["lineage"] == "trained" and card["model_family"] == "custom"
    assert (folder / "model.original.pt").is_file() and (folder / "model.onnx").is_file()
    assert json.loads(Path(out.report_uri.removeprefix("file://")).read_text())["gate"] == ctx.registry.gate(rec)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def train(context):\n    return {}\n", "must write exactly one of model.onnx, model.pt"),
        ("def train(context):\n    raise ValueError('no GPU here')\n", "train(context) raised ValueError: no GPU here"),
        (
            "def train(context):\n    (context.output_dir / 'model.pt').write_bytes(b'PK\\x03\\x04junk')\n",
            "not a loadable TorchScript archive",
        ),
    ],
    ids=["writes-nothing", "raises", "writes-junk"],
)
def test_a_broken_training_loop_fails_the_job_naming_why(
    ctx: JobContext, digits_uri: str, tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "loop.py").write_text(source)
    doc = json.loads(spec_json(_example("own-training.yaml")))
    doc["name"] = "digits-broken"
    doc["model"]["code"] = {"path": "loop.py", "entry": "train"}  # read from tmp_path when loaded
    broken = load_spec(json.dumps(doc), tmp_path)
    with pytest.raises(TrainerError) as exc:
        run_job(_job(broken, digits_uri), ctx)
    assert message in str(exc.value)
    assert ctx.registry.list("digits-broken") == []

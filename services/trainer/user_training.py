"""A project's own training loop (`model.code.entry: train`).

Flywheel loads the snapshot and prepares the project's model inputs (the same preprocessing as
serving), then calls the project's `train(context)`. The code trains however it likes and writes
`model.onnx` or `model.pt` (TorchScript) into `context.output_dir`; it may return a dict of its own
numbers, kept with the version as `user_<name>`. Flywheel then does what it does for a model
trained elsewhere (external.py): checks the model against the project, measures it on the
snapshot with the baselines a training job runs, and registers it, so the same gate judges it.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services.projects import ProjectSpec, spec_sha256
from services.projects.catalog import Project
from services.trainer.data import SnapshotData
from services.trainer.errors import TrainingFailed
from services.trainer.external import check_model, install, measure_on
from services.trainer.job_run import JobContext, JobOutcome, JobSpec
from services.trainer.user_code import user_entry

MODEL_FILES = ("model.onnx", "model.pt")


@dataclass
class TrainContext:
    """What `train(context)` gets. `data.train.x` / `.y`: model inputs (float32, the project's input
    shape) and label indices into `data.labels`; the same for `validation` and `test` (keep the test
    split for Flywheel's measurement)."""

    spec: ProjectSpec
    data: SnapshotData
    hyperparameters: dict[str, str]
    output_dir: Path
    seed: int
    threads: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.data.input_shape

    @property
    def labels(self) -> tuple[str, ...]:
        return self.data.labels


def run_user_training(spec: JobSpec, ctx: JobContext, project: ProjectSpec, data: SnapshotData) -> JobOutcome:
    train = user_entry(project, "train")
    started = time.monotonic()
    ctx.progress("train", 0.1, f"{project.model.code.path if project.model.code else 'train'}: train(context)", {})
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as tmp:
        out = Path(tmp)
        context = TrainContext(
            project, data, dict(spec.hyperparameters), out, int(spec.hyperparameters.get("seed", 0)), ctx.threads
        )
        try:
            returned = train(context)
        except Exception as exc:  # the project's code may raise anything; the job reports it
            raise TrainingFailed(f"train(context) raised {type(exc).__name__}: {exc}") from exc
        written = [out / name for name in MODEL_FILES if (out / name).is_file()]
        if len(written) != 1:
            raise TrainingFailed(
                f"train(context) must write exactly one of {', '.join(MODEL_FILES)} into context.output_dir; "
                f"it wrote {sorted(p.name for p in out.iterdir()) or 'nothing'}"
            )
        model_bytes = written[0].read_bytes()
    user_numbers = returned if isinstance(returned, dict) else {}
    ctx.progress("export", 0.85, f"checking {written[0].name} against the project", {})
    proj = Project(project, spec.project_version, spec_sha256(project))
    sample = data.test.x if len(data.test) else data.train.x
    checked = check_model(model_bytes, proj, sample)
    ctx.progress("baselines", 0.9, "measuring it with the baselines", {})
    measured = measure_on(checked.onnx_bytes, data, ctx.combined, ctx.registry, spec.model)
    for key, value in user_numbers.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            measured.metrics[f"user_{key}"] = float(value)
    rec = install(
        checked,
        proj,
        ctx.registry,
        ctx.repository,
        measured,
        ctx.git_commit,
        lineage="trained",
        family="custom",
        job_id=spec.job_id,
        hyperparameters=dict(spec.hyperparameters),
    )
    report = {
        "job_id": spec.job_id,
        "model": spec.model,
        "version": str(rec.version),
        "model_family": "custom",
        "entry": "train",
        "snapshot_id": data.snapshot_id,
        "source_format": checked.source_format,
        "metrics": rec.metrics,
        "gate": ctx.registry.gate(rec),
        "seconds": time.monotonic() - started,
    }
    folder = ctx.reports / spec.job_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    ctx.progress(
        "done", 1.0, f"{spec.model} v{rec.version}: test accuracy {rec.metrics.get('test_accuracy', 0):.4f}", {}
    )
    return JobOutcome(str(rec.version), path.resolve().as_uri(), rec.metrics, report)

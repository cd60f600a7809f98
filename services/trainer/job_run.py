"""One training job end to end: snapshot → baselines → overfit check → search/train → export → register → report.

Plain Python with no transport: the worker process (local or in a Kubernetes pod), the bench
and the tests call `run_job` directly.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from services.preprocessing import InputCodec
from services.projects import ProjectSpec, SpecInvalid, parse_spec_json, spec_json
from services.trainer.data import SnapshotData, load_snapshot
from services.trainer.data.inputs import ObjectReader, prepare
from services.trainer.errors import InvalidRequest
from services.trainer.export import ExportOptions, export_model, next_version, onnx_probabilities
from services.trainer.models import family
from services.trainer.models.families import check_family, family_defaults, fitted_encoders
from services.trainer.registry import Registry, VersionRecord
from services.trainer.report import write_report
from services.trainer.training.baselines import run_baselines
from services.trainer.training.hyperparameters import parse_hyperparameters
from services.trainer.training.loop import Control, distributed, predict, train
from services.trainer.training.metrics import SCALARS, CombinedMetric, classification_metrics
from services.trainer.training.overfit import OverfitCheck, overfit_one_batch
from services.trainer.training.search import SearchSpec, random_search
from services.trainer.user_code import user_entry

Progress = Callable[[str, float, str, dict[str, float]], None]


@dataclass
class JobSpec:
    job_id: str
    model: str
    model_family: str
    snapshot_id: str
    snapshot_uri: str
    hyperparameters: dict[str, str] = field(default_factory=dict)
    search_trials: int = 0  # 0: no search, train the given hyperparameters
    search_rounds: int = 2
    budget_s: float = 0.0  # 0: unlimited
    runner: str = "local"
    gpus: int = 0
    combined_metric: str = ""
    project: str = ""  # the project's name (empty: the model's)
    project_version: int = 0
    project_spec: str = ""  # the spec's canonical JSON, frozen when the job was submitted
    kubernetes: dict = field(default_factory=dict)  # the Kubernetes block: the project's, a request's over it

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))

    @staticmethod
    def project_fields(project: ProjectSpec, version: int = 1) -> dict:
        """The fields that tie a job to a project version (for callers building a JobSpec by hand)."""
        return {"project": project.name, "project_version": version, "project_spec": spec_json(project)}

    def spec(self) -> ProjectSpec:
        if not self.project_spec:
            raise InvalidRequest(f"job {self.job_id} carries no project spec (submit it for a registered project)")
        try:
            return parse_spec_json(self.project_spec)
        except SpecInvalid as exc:
            raise InvalidRequest(f"job {self.job_id}: {exc}") from None

    def validate(self) -> JobSpec:
        fam = family(self.model_family)
        project = self.spec()
        check_family(fam, project)
        if project.model.code is None or project.model.code.entry != "train":  # its own loop reads its own
            parse_hyperparameters(self.hyperparameters, family_defaults(fam))
        if not self.model or not all(c.isalnum() or c in "-_" for c in self.model):
            raise InvalidRequest(f"model name {self.model!r}: use letters, digits, '-' and '_'")
        if self.search_trials < 0 or self.search_rounds < 1 or self.budget_s < 0:
            raise InvalidRequest("search trials must be >= 0, rounds >= 1 and budget_s >= 0")
        if self.combined_metric:
            CombinedMetric.parse(self.combined_metric)
        return self


@dataclass
class JobContext:
    repository: Path
    reports: Path
    registry: Registry
    combined: CombinedMetric
    export: ExportOptions = field(default_factory=ExportOptions)
    overfit: OverfitCheck = field(default_factory=OverfitCheck)
    threads: int = 1
    git_commit: str = ""
    read_object: ObjectReader | None = None  # the stored originals (larger images, texts) by URI
    progress: Progress = lambda phase, fraction, message, metrics: None
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class JobOutcome:
    version: str
    report_uri: str
    metrics: dict[str, float]
    report: dict
    model: torch.nn.Module | None = None  # the trained logits model (for callers that check exports)


def model_card(
    project: ProjectSpec,
    project_version: int,
    snapshot_id: str,
    metrics: dict[str, float],
    *,
    lineage: str,
    family: str,
    encoders: dict | None = None,
) -> dict:
    """A version's flywheel.json (less the tensor names): everything the gateway needs to encode a
    native input for it (the project's input spec), the labels of its outputs, the features the
    monitor tests, and where it came from."""
    return {
        "preprocess": "project",  # the input is encoded by services/preprocessing from `input`
        "project": project.name,
        "project_version": project_version,
        "task": project.task.type,
        "labels": list(project.labels),
        "input_spec": json.loads(spec_json(project))["input"],
        "features": InputCodec(project.input).schema().as_dict(),
        "snapshot_id": snapshot_id,
        "metrics": metrics,
        "lineage": lineage,
        "model_family": family,
        "encoders": encoders or {},
    }


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def production_on_split(registry: Registry, model: str, data: SnapshotData, combined: CombinedMetric) -> dict:
    """Run the current production artifact on this job's test split (the fair comparison for the gate)."""
    prod = registry.production(model)
    if prod is None or not len(data.test):
        return {}
    path = Path(prod.artifacts.get("onnx", ""))
    if not path.is_file():
        return {"production_version": float(prod.version)}
    probs = onnx_probabilities(path, data.test.x)
    m = classification_metrics(data.test.y, probs.argmax(axis=1).astype(np.int64), data.n_classes)
    return {"production_version": float(prod.version), "production_test_combined": combined.score(m)}


def run_job(spec: JobSpec, ctx: JobContext) -> JobOutcome:
    spec.validate()
    torch.set_num_threads(max(1, ctx.threads))
    combined = CombinedMetric.parse(spec.combined_metric) if spec.combined_metric else ctx.combined
    fam = family(spec.model_family)
    project = spec.spec()
    own_loop = project.model.code is not None and project.model.code.entry == "train"
    user_builder = user_entry(project, "build_model") if fam.name == "custom" and not own_loop else None
    start = time.monotonic()
    deadline = start + spec.budget_s if spec.budget_s > 0 else float("inf")
    report_progress = ctx.progress

    def check() -> None:
        Control(ctx.cancelled).check()

    report_progress("data", 0.01, f"loading snapshot {spec.snapshot_id}", {})
    data = prepare(load_snapshot(spec.snapshot_uri, labels=project.labels), project, ctx.read_object)
    check()
    if own_loop:
        from services.trainer.user_training import run_user_training  # built on this module's types

        return run_user_training(spec, ctx, project, data)

    report_progress("baselines", 0.03, "majority class and logistic regression", {})
    baselines = run_baselines(data, combined)
    best_baseline = max(baselines, key=lambda b: b.combined.get("test", b.combined.get("validation", -1)))
    check()

    base = parse_hyperparameters(spec.hyperparameters, family_defaults(fam))
    report_progress("overfit_check", 0.06, "overfitting one batch", {})
    linear = next((b for b in baselines if b.name == "logistic_regression"), None)
    linear_acc = (linear.metrics.get("validation") or linear.metrics["train"])["accuracy"] if linear else None
    overfit = overfit_one_batch(fam, data, base, ctx.overfit, user_builder, baseline_accuracy=linear_acc)
    check()

    epoch_state = {"n": 0}

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        epoch_state["n"] += 1  # counts across an ensemble's members, so progress only moves forward
        frac = 0.1 + 0.75 * min(1.0, epoch_state["n"] / (base.max_epochs * base.ensemble))
        report_progress("train", frac, f"epoch {epoch}", m)

    control = Control(ctx.cancelled, deadline, on_epoch if not spec.search_trials else None)
    search_report: dict = {}
    if spec.search_trials:
        s_spec = SearchSpec(trials=spec.search_trials, rounds=spec.search_rounds)

        def on_trial(trial, total: int) -> None:  # type: ignore[no-untyped-def]
            report_progress(
                "search",
                0.1 + 0.75 * (trial.index + 1) / total,
                f"trial {trial.index + 1}/{total} (round {trial.round})",
                {"val_combined": trial.val_score, "val_accuracy": trial.val_accuracy},
            )

        # An ensemble is searched as single networks (its members' hyperparameters), then trained
        # once at the winning point: trials × members trainings would cost K times as much.
        search = random_search(fam, data, replace(base, ensemble=1), s_spec, combined, control, on_trial, user_builder)
        result = search.best
        if base.ensemble > 1:
            report_progress("train", 0.85, f"ensemble of {base.ensemble} at the best trial's point", {})
            result = train(fam, data, replace(result.hp, ensemble=base.ensemble), control, user_builder)
        search_report = {
            "spec": {"trials": s_spec.trials, "rounds": s_spec.rounds},
            "stopped_by": search.stopped_by,
            "trials": [{**asdict(t), "hp": asdict(t.hp)} for t in search.trials],
        }
    else:
        result = train(fam, data, base, control, user_builder)
    check()
    if distributed()[0] != 0:
        return JobOutcome("", "", {}, {})  # under torchrun only rank 0 evaluates, exports and registers

    evals = {}
    for split_name in ("train", "validation", "test"):
        split = getattr(data, split_name)
        if len(split):
            evals[split_name] = classification_metrics(split.y, predict(result.model, split.x), data.n_classes)
    scores = {s: combined.score(m) for s, m in evals.items()}
    production = production_on_split(ctx.registry, spec.model, data, combined)

    report_progress("export", 0.88, "ONNX, int8 ONNX, TorchScript, .mar", {})
    version = next_version(ctx.repository, spec.model, ctx.registry.max_version(spec.model) + 1)
    for variant in (f"{spec.model}_int8", f"{spec.model}_torchscript"):
        version = next_version(ctx.repository, variant, int(version))
    heldout = data.test if len(data.test) else data.validation
    metrics: dict[str, float] = {}
    for split_name, m in evals.items():
        prefix = {"validation": "val"}.get(split_name, split_name)
        metrics.update({f"{prefix}_{k}": float(m[k]) for k in SCALARS})
        metrics[f"{prefix}_combined"] = scores[split_name]
    for b in baselines:
        for split_name, value in b.combined.items():
            metrics[f"baseline_{b.name}_{split_name}_combined"] = value
        if "test" in b.metrics:
            metrics[f"baseline_{b.name}_test_accuracy"] = b.metrics["test"]["accuracy"]
    metrics["baseline_best_test_combined"] = best_baseline.combined.get("test", float("nan"))
    metrics.update(production)
    exported = export_model(
        result.model,
        repo=ctx.repository,
        name=spec.model,
        version=version,
        heldout_x=heldout.x,
        heldout_y=heldout.y,
        flywheel=model_card(
            project,
            spec.project_version,
            data.snapshot_id,
            {k: v for k, v in metrics.items() if k.startswith("test_")},
            lineage="trained",
            family=spec.model_family,
            encoders=fitted_encoders(result.model),
        ),
        options=ctx.export,
    )
    metrics.update({f"export_{k}": v for k, v in exported.checks.items()})
    check()

    report_progress("register", 0.95, f"registering {spec.model} v{version}", {})
    ctx.registry.register(
        VersionRecord(
            model=spec.model,
            version=int(version),
            stage="candidate",
            model_family=spec.model_family,
            snapshot_id=data.snapshot_id,
            git_commit=ctx.git_commit,
            job_id=spec.job_id,
            hyperparameters=result.hp.as_strings(),
            metrics=metrics,
            artifacts=exported.artifacts,
            lineage="trained",
            project_version=spec.project_version,
        )
    )

    report_progress("report", 0.98, "writing the report", {})
    irreducible = 0.0
    train_err = 1 - evals["train"]["accuracy"]
    val_err = 1 - evals.get("validation", evals["train"])["accuracy"]
    test_err = 1 - evals.get("test", evals.get("validation", evals["train"]))["accuracy"]
    baseline_err = 1 - best_baseline.metrics.get("test", best_baseline.metrics["train"])["accuracy"]
    report = {
        "job_id": spec.job_id,
        "model": spec.model,
        "version": version,
        "model_family": spec.model_family,
        "snapshot_id": data.snapshot_id,
        "git_commit": ctx.git_commit,
        "labels": list(data.labels),
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "combined_metric": combined.describe(),
        "hyperparameters": asdict(result.hp),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_by": result.stopped_by,
        "history": result.history,
        "train": evals["train"],
        "validation": evals.get("validation"),
        "test": evals.get("test", evals.get("validation")),
        "combined": scores,
        "baselines": [
            {"name": b.name, "description": b.description, "metrics": b.metrics, "combined": b.combined}
            for b in baselines
        ],
        "comparison": [
            {
                "name": b.name,
                "accuracy": b.metrics.get("test", {}).get("accuracy", float("nan")),
                "macro_f1": b.metrics.get("test", {}).get("macro_f1", float("nan")),
                "combined": b.combined.get("test", float("nan")),
            }
            for b in baselines
        ]
        + [
            {
                "name": f"{spec.model} v{version}",
                "accuracy": evals.get("test", {}).get("accuracy", float("nan")),
                "macro_f1": evals.get("test", {}).get("macro_f1", float("nan")),
                "combined": scores.get("test", float("nan")),
            }
        ],
        "bias_variance": {
            "irreducible error (assumed)": irreducible,
            f"best baseline test error ({best_baseline.name})": baseline_err,
            "train error": train_err,
            "validation error": val_err,
            "test error": test_err,
            "avoidable bias (train − irreducible)": train_err - irreducible,
            "variance (validation − train)": val_err - train_err,
            "validation overfitting (test − validation)": test_err - val_err,
            "improvement over best baseline (baseline − test)": baseline_err - test_err,
        },
        "overfit_check": overfit.as_dict(),
        "search": search_report,
        "export": {**exported.checks, "notes": "; ".join(exported.notes)},
        "artifacts": exported.artifacts,
        "production": production,
        "seconds": time.monotonic() - start,
    }
    _, html_path = write_report(ctx.reports / spec.job_id, report)
    report_progress("done", 1.0, f"{spec.model} v{version}: test accuracy {metrics.get('test_accuracy', 0):.4f}", {})
    return JobOutcome(version, html_path.resolve().as_uri(), metrics, report, result.model)

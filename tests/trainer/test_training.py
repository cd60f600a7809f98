"""A real training job on scikit-learn's digits: accuracy, baselines, exports, repository layout, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from services.trainer.export import INT8_ATOL, INT8_MIN_AGREEMENT, ONNX_ATOL
from services.trainer.models import family
from services.trainer.models.families import family_defaults
from services.trainer.training.hyperparameters import parse_hyperparameters
from services.trainer.training.loop import train
from tests.support.projects import example_spec, job_project, prepared


def test_digits_model_beats_both_baselines(trained) -> None:
    m = trained.outcome.metrics
    assert m["test_accuracy"] >= 0.95
    assert m["test_combined"] > m["baseline_majority_test_combined"]
    assert m["test_combined"] > m["baseline_logistic_regression_test_combined"]
    versions = trained.registry.list("digits")
    assert [(v.version, v.stage, v.snapshot_id, v.git_commit) for v in versions] == [
        (1, "candidate", "snap-digits", "test")
    ]
    assert versions[0].hyperparameters["lr"] == "0.001"
    assert set(versions[0].artifacts) >= {"onnx", "onnx_int8", "torchscript", "mar"}


def test_repository_follows_the_contract(trained) -> None:
    repo: Path = trained.repo
    for folder, platform, inp, out, file in (
        ("digits", "onnxruntime_onnx", "features", "probabilities", "model.onnx"),
        ("digits_int8", "onnxruntime_onnx", "features", "probabilities", "model.onnx"),
        ("digits_torchscript", "pytorch_libtorch", "INPUT__0", "OUTPUT__0", "model.pt"),
    ):
        cfg = text_format.Parse((repo / folder / "config.pbtxt").read_text(), mc.ModelConfig())
        assert (cfg.name, cfg.platform, cfg.max_batch_size) == (folder, platform, 64)
        assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [(inp, mc.TYPE_FP32, [64])]
        assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [(out, mc.TYPE_FP32, [10])]
        assert cfg.HasField("dynamic_batching") and cfg.version_policy.latest.num_versions == 3
        meta = json.loads((repo / folder / "1" / "flywheel.json").read_text())
        assert meta["preprocess"] == "project" and meta["project"] == "digits"
        assert meta["labels"] == [str(d) for d in range(10)] and meta["input_spec"]["height"] == 8
        assert (meta["input"], meta["output"], meta["snapshot_id"]) == (inp, out, "snap-digits")
        assert "test_accuracy" in meta["metrics"] and meta["created_at"]
        assert (repo / folder / "1" / file).is_file()
    assert (repo / "digits_torchscript" / "1" / "digits.mar").is_file()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "temporary export folders left behind"


def test_onnx_and_int8_agree_with_pytorch(trained, digits_uri) -> None:
    data = prepared(digits_uri)
    x = data.test.x
    with torch.no_grad():
        ref = torch.softmax(trained.outcome.model(torch.from_numpy(x)), dim=1).numpy()
    sess = ort.InferenceSession(str(trained.repo / "digits" / "1" / "model.onnx"))
    for batch in (1, 7, len(x)):  # the batch axis is dynamic
        got = sess.run(["probabilities"], {"features": x[:batch]})[0]
        np.testing.assert_allclose(got, ref[:batch], atol=ONNX_ATOL)
    q = ort.InferenceSession(str(trained.repo / "digits_int8" / "1" / "model.onnx"))
    qp = q.run(["probabilities"], {"features": x})[0]
    assert np.abs(qp - ref).max() <= INT8_ATOL
    assert (qp.argmax(1) == ref.argmax(1)).mean() >= INT8_MIN_AGREEMENT
    ts = torch.jit.load(str(trained.repo / "digits_torchscript" / "1" / "model.pt"))
    np.testing.assert_allclose(ts(torch.from_numpy(x)).detach().numpy(), ref, atol=1e-5)
    assert "export_int8_accuracy_change" in trained.outcome.metrics  # reported, and shown in the report


def test_report_has_every_section(trained) -> None:
    report = trained.outcome.report
    for key in ("history", "test", "baselines", "comparison", "bias_variance", "overfit_check", "export"):
        assert report[key], key
    assert len(report["test"]["confusion_matrix"]) == 10
    assert len(report["test"]["per_class"]["recall"]) == 10
    html_path = Path(trained.outcome.report_uri.removeprefix("file://"))
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "Bias-variance" in page and "logistic_regression" in page
    assert json.loads((html_path.parent / "report.json").read_text())["job_id"] == "job-digits"


def test_training_is_reproducible(digits_uri) -> None:
    data = prepared(digits_uri)
    fam = family("mlp")
    hp = parse_hyperparameters({"max_epochs": "3", "width": "32", "seed": "5"}, family_defaults(fam))
    torch.set_num_threads(1)
    a, b = train(fam, data, hp), train(fam, data, hp)
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert a.history == b.history


def test_an_ensemble_serves_its_members_mean_and_exports_to_onnx(digits_uri: str, tmp_path: Path) -> None:
    """`ensemble=3` trains three members from different seeds; the one model answers their mean
    probabilities, and the exported ONNX graph answers the same."""
    from services.trainer.export import _onnx_export, onnx_probabilities
    from services.trainer.models import WithSoftmax
    from services.trainer.models.layers import Ensemble

    data = prepared(digits_uri)
    fam = family("small_cnn")
    hp = parse_hyperparameters({"max_epochs": "2", "width": "16", "ensemble": "3"}, family_defaults(fam))
    torch.set_num_threads(1)
    result = train(fam, data, hp)
    assert isinstance(result.model, Ensemble) and len(result.model.members) == 3
    members = list(result.model.members)
    assert not torch.equal(members[0].head[0].weight, members[1].head[0].weight)  # different seeds
    x = torch.from_numpy(data.test.x[:50])
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), dim=-1) for m in members]).mean(dim=0)
        served = WithSoftmax(result.model)(x)
    torch.testing.assert_close(served, mean, atol=1e-6, rtol=1e-5)
    path = tmp_path / "model.onnx"
    _onnx_export(WithSoftmax(result.model).eval(), (64,), path, "torchscript")
    np.testing.assert_allclose(onnx_probabilities(path, data.test.x[:50]), mean.numpy(), atol=ONNX_ATOL)


def test_a_searched_ensemble_searches_single_networks_then_trains_the_members(digits_uri: str, tmp_path: Path) -> None:
    """With a search, an ensemble's trials are single networks; the members are trained once, at the winner."""
    from services.storage import Database, migrate
    from services.trainer.export import ExportOptions
    from services.trainer.job_run import JobContext, JobSpec, run_job
    from services.trainer.registry import Registry
    from services.trainer.tables import MIGRATIONS
    from services.trainer.training.metrics import CombinedMetric

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, [MIGRATIONS])
    registry = Registry(Database(url), repository_uri=(tmp_path / "models").as_uri())
    ctx = JobContext(
        repository=tmp_path / "models",
        reports=tmp_path / "reports",
        registry=registry,
        combined=CombinedMetric.parse("weighted:accuracy=0.5,macro_f1=0.5"),
        export=ExportOptions(exporter="torchscript", int8=False, torchscript=False, mar=False),
    )
    hp = {"max_epochs": "2", "width": "16", "ensemble": "2", "augment_shift": "0"}
    project = example_spec("digits").model_copy(update={"name": "digits-ens"})
    spec = JobSpec(
        "job-ens", "digits-ens", "small_cnn", "snap-digits", digits_uri, hp, search_trials=3, **job_project(project)
    )
    out = run_job(spec, ctx)
    trials = out.report["search"]["trials"]
    assert len(trials) == 3 and all(t["hp"]["ensemble"] == 1 for t in trials)  # in 2 rounds (the default)
    assert isinstance(out.model, torch.nn.Module) and len(out.model.members) == 2
    assert registry.get("digits-ens", out.version).hyperparameters["ensemble"] == "2"

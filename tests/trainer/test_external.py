"""Models trained elsewhere (`flywheel models deploy`'s core): checked against the project's spec, served
under the served tensor names with probabilities out, measured on a snapshot with the same baselines a
training job runs, and judged by the same promotion gate. The "external" models are the digits job's
own network (the `trained` fixture) exported as a user would: TorchScript of the logits, and ONNX
with their own tensor names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from services.preprocessing import InputCodec
from services.projects import spec_sha256
from services.projects.catalog import Project
from services.storage import Database, migrate
from services.trainer.errors import ProjectNotFound, PromotionRefused
from services.trainer.external import ExternalDeployer, ModelRejected, check_model, install, measure
from services.trainer.projects import ProjectRegistry
from services.trainer.registry import Registry
from services.trainer.snapshots import SnapshotResolver
from services.trainer.tables import MIGRATIONS
from services.trainer.training.metrics import CombinedMetric
from tests.support.projects import example_spec, prepared
from tests.trainer.conftest import COMBINED

DIGITS = Project(example_spec("digits"), 1, spec_sha256(example_spec("digits")))
SHAPE = tuple(InputCodec(DIGITS.spec.input).shape)


def _torchscript(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(2, *SHAPE)), buf)
    return buf.getvalue()


def _onnx(model: nn.Module, dynamic: bool = True, shape: tuple[int, ...] = SHAPE) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (torch.zeros(2, *shape),),
        buf,
        input_names=["pixels"],
        output_names=["class_scores"],
        dynamic_axes={"pixels": {0: "n"}, "class_scores": {0: "n"}} if dynamic else None,
        opset_version=17,
        dynamo=False,
    )
    return buf.getvalue()


def _served(checked_bytes: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(checked_bytes, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features"] and [o.name for o in sess.get_outputs()] == [
        "probabilities"
    ]
    return np.asarray(sess.run(["probabilities"], {"features": x})[0])


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, [MIGRATIONS])
    return Registry(Database(url), repository_uri=(tmp_path / "models").as_uri())


def test_a_torchscript_model_is_served_as_onnx_with_a_softmax_measured_and_let_through_the_gate(
    trained, digits_uri: str, registry: Registry, tmp_path: Path
) -> None:
    logits_model = trained.outcome.model
    data = prepared(digits_uri)
    checked = check_model(_torchscript(logits_model), DIGITS, data.test.x)
    assert checked.source_format == "torchscript" and checked.checks["torchscript_onnx_max_abs_diff"] < 1e-4

    probs = _served(checked.onnx_bytes, data.test.x)
    with torch.no_grad():
        logits = logits_model(torch.from_numpy(data.test.x)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # the appended softmax
    assert (probs.argmax(axis=1) == logits.argmax(axis=1)).all()

    combined = CombinedMetric.parse(COMBINED)
    measured = measure(checked.onnx_bytes, DIGITS, digits_uri, None, combined)
    # Measured on the same split as the job that trained it: the same accuracy, the same baselines.
    assert measured.metrics["test_accuracy"] == pytest.approx(trained.outcome.metrics["test_accuracy"])
    assert measured.metrics["baseline_best_test_combined"] == pytest.approx(
        trained.outcome.metrics["baseline_best_test_combined"]
    )
    rec = install(checked, DIGITS, registry, tmp_path / "models", measured)
    assert rec.lineage == "external" and rec.stage == "candidate" and rec.model_family == "external_torchscript"
    assert registry.gate(rec) == []
    folder = tmp_path / "models" / "digits" / str(rec.version)
    card = json.loads((folder / "flywheel.json").read_text())
    assert card["lineage"] == "external" and card["project"] == "digits" and card["snapshot_id"] == "snap-digits"
    assert (card["input"], card["output"]) == ("features", "probabilities")
    assert card["input_spec"]["kind"] == "image" and card["labels"] == list(DIGITS.spec.labels)
    assert (folder / "model.original.pt").read_bytes() == checked.original
    assert 'name: "features"' in (tmp_path / "models" / "digits" / "config.pbtxt").read_text()
    assert registry.promote("digits", rec.version, "production").stage == "production"


def test_an_onnx_model_keeps_its_probabilities_and_must_beat_production(
    trained, digits_uri: str, registry: Registry, tmp_path: Path
) -> None:
    """The same network as an ONNX file with softmax inside: no second softmax; equal to production, refused."""
    probs_model = nn.Sequential(trained.outcome.model, nn.Softmax(dim=1))
    data = prepared(digits_uri)
    combined = CombinedMetric.parse(COMBINED)
    first = check_model(_torchscript(trained.outcome.model), DIGITS, data.test.x)
    v1 = install(
        first, DIGITS, registry, tmp_path / "models", measure(first.onnx_bytes, DIGITS, digits_uri, None, combined)
    )
    registry.promote("digits", v1.version, "production")

    checked = check_model(_onnx(probs_model), DIGITS, data.test.x)
    assert checked.source_format == "onnx"
    with torch.no_grad():
        expected = probs_model(torch.from_numpy(data.test.x)).numpy()
    np.testing.assert_allclose(_served(checked.onnx_bytes, data.test.x), expected, atol=1e-5)
    v2 = install(
        checked,
        DIGITS,
        registry,
        tmp_path / "models",
        measure(checked.onnx_bytes, DIGITS, digits_uri, None, combined, registry),
    )
    assert v2.version == v1.version + 1
    reasons = registry.gate(v2)
    assert v2.metrics["production_version"] == v1.version  # production measured on the same test split
    assert v2.metrics["production_test_combined"] == pytest.approx(v2.metrics["test_combined"])
    assert len(reasons) == 1 and f"does not beat production v{v1.version}" in reasons[0], reasons
    assert "on this version's test split" in reasons[0]


def test_an_unmeasured_model_is_registered_but_the_gate_refuses_it(registry: Registry, tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), len(DIGITS.spec.labels)))
    rec = install(check_model(_onnx(model), DIGITS), DIGITS, registry, tmp_path / "models", None)
    assert rec.snapshot_id == "" and rec.metrics == {}
    assert registry.gate(rec) == ["the version has no test_combined metric"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"not a model at all", "neither an ONNX model nor a TorchScript archive"),
        (lambda: b"", "the upload is empty"),
        (
            lambda: _onnx(nn.Sequential(nn.Flatten(), nn.Linear(63, 10)), shape=(63,)),
            "project 'digits' gives [batch, " + ", ".join(map(str, SHAPE)) + "]",
        ),
        (lambda: _onnx(nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 3))), "has 10 labels"),
        (lambda: _onnx(nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 10)), dynamic=False), "fixed batch"),
        (lambda: b"PK\x03\x04 a zip that is not TorchScript", "not a loadable TorchScript archive"),
    ],
    ids=["garbage", "empty", "wrong-input-shape", "wrong-label-count", "fixed-batch", "bad-torchscript"],
)
def test_a_model_that_does_not_fit_the_project_is_refused_naming_the_difference(make, message: str) -> None:
    with pytest.raises(ModelRejected) as exc:
        check_model(make(), DIGITS)
    assert message in str(exc.value) and str(exc.value).startswith("model: ")


def test_the_deployer_measures_on_the_given_snapshot_and_a_refused_promotion_names_the_candidate(
    trained, lake_root: Path, registry: Registry, tmp_path: Path
) -> None:
    """`POST /v1/models/{model}/versions`'s core, with the project registry and snapshot resolver it runs with."""
    db_url = f"sqlite:///{tmp_path / 'projects.db'}"
    migrate(db_url, [MIGRATIONS])
    projects = ProjectRegistry(Database(db_url))
    projects.create(DIGITS.spec)
    deployer = ExternalDeployer(
        projects,
        registry,
        tmp_path / "models",
        SnapshotResolver(lake_root.as_uri(), None),
        None,
        CombinedMetric.parse(COMBINED),
    )
    model = _torchscript(trained.outcome.model)
    first = deployer.deploy("digits", model, snapshot_id="snap-digits", promote="production")
    assert first.record.stage == "production" and first.measured_on == "snap-digits" and first.gate == []
    with pytest.raises(PromotionRefused) as exc:
        deployer.deploy("digits", model, snapshot_id="snap-digits", promote="production")
    assert f"digits v{first.record.version + 1} is registered as a candidate" in str(exc.value)
    assert f"does not beat production v{first.record.version}" in str(exc.value)
    assert registry.get("digits", first.record.version + 1).stage == "candidate"
    with pytest.raises(ProjectNotFound):
        deployer.deploy("no-such-project", model)
    # No lake to cut a snapshot from: registered unmeasured, and the answer says why.
    unmeasured = deployer.deploy("digits", model)
    assert unmeasured.measured_on.startswith("not measured") and unmeasured.record.metrics.keys() <= {
        "external_torchscript_onnx_max_abs_diff"
    }

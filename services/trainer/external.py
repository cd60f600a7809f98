"""Serve a model trained elsewhere (`flywheel models deploy`): check it, register it, measure it for the gate.

The upload is an ONNX file or a TorchScript archive with one input that takes the project's model
input (the tensor services/preprocessing makes from the spec, `InputCodec(spec.input).shape`, with a
free batch dimension) and one output with a score per label. It becomes a version like a trained
one, in the same Triton layout (`<repo>/<model>/<version>/model.onnx` + `flywheel.json`), so the
model server, the gateway's `:predict` and the monitor treat it the same way:

* TorchScript is exported to ONNX here and the two are compared on sample inputs, so one model's
  versions share one runtime whatever they came from; the original archive is kept beside it;
* the graph's tensors are renamed to the served names (`features` → `probabilities`), and a softmax
  is appended when the outputs are not probabilities, so answers and the gate's numbers mean the
  same for every version;
* measured, when the project has labelled data: on a snapshot's test split with the baselines a
  training job runs, recorded as a trained version's numbers are, so the promotion gate judges it
  the same way (without labels it has no numbers, and the gate refuses it until it is measured).

Its lineage is "external"; nothing about how it was trained is claimed.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from services.preprocessing import InputCodec
from services.projects.catalog import Project
from services.trainer.data import SnapshotData, load_snapshot
from services.trainer.data.inputs import ObjectReader, prepare
from services.trainer.errors import InvalidRequest, LakeUnavailable, PromotionRefused, SnapshotNotFound
from services.trainer.export import model_config, next_version
from services.trainer.job_run import model_card, production_on_split
from services.trainer.projects import ProjectRegistry
from services.trainer.registry import Registry, VersionRecord
from services.trainer.snapshots import SnapshotResolver
from services.trainer.training.baselines import run_baselines
from services.trainer.training.metrics import SCALARS, CombinedMetric, classification_metrics

MAX_MODEL_BYTES = 512 * 1024 * 1024
INPUT, OUTPUT = "features", "probabilities"
SCORES = "flywheel_model_scores"  # the uploaded graph's own output, before the softmax (when it needs one)
# Export vs TorchScript: the tolerance of PyTorch's own ONNX export check (rtol 1e-3) with an absolute floor;
# an absolute bound alone rejected a good model on another CPU (|Δ| 1.07e-4 on logits: different kernels).
TORCHSCRIPT_RTOL = 1e-3
TORCHSCRIPT_ATOL = 1e-4
SAMPLE_ROWS = 8


class ModelRejected(InvalidRequest):
    """The uploaded model does not fit the project; the message names what differs."""


@dataclass
class CheckedModel:
    onnx_bytes: bytes  # the served graph: features → probabilities
    source_format: str  # "onnx" or "torchscript"
    original: bytes
    checks: dict[str, float] = field(default_factory=dict)


def source_format(data: bytes) -> str:
    """TorchScript archives are zip files; anything else must parse as an ONNX model."""
    return "torchscript" if data[:4] == b"PK\x03\x04" else "onnx"


def check_model(data: bytes, project: Project, sample: np.ndarray | None = None) -> CheckedModel:
    """The upload as a served graph, or ModelRejected naming what does not fit the project's spec."""
    if not data:
        raise ModelRejected("model: the upload is empty")
    if len(data) > MAX_MODEL_BYTES:
        raise ModelRejected(f"model: {len(data)} bytes; the limit is {MAX_MODEL_BYTES}")
    shape = tuple(int(d) for d in InputCodec(project.spec.input).shape)
    n_labels = len(project.spec.labels)
    rng = np.random.default_rng(0)
    x = sample[:SAMPLE_ROWS] if sample is not None and len(sample) else rng.normal(size=(SAMPLE_ROWS, *shape))
    x = np.ascontiguousarray(x, dtype=np.float32)
    fmt = source_format(data)
    checks: dict[str, float] = {}
    if fmt == "torchscript":
        graph, checks = _torchscript_to_onnx(data, shape, x)
    else:
        try:
            graph = onnx.load_from_string(data)
        except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and more for bytes that are no model
            raise ModelRejected(f"model: neither an ONNX model nor a TorchScript archive ({exc})") from None
    graph = _served_graph(graph, shape, n_labels, x, project.name)
    return CheckedModel(graph.SerializeToString(), fmt, data, checks)


def _torchscript_to_onnx(data: bytes, shape: tuple[int, ...], x: np.ndarray) -> tuple[onnx.ModelProto, dict]:
    import torch

    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds for archives it cannot read
        raise ModelRejected(f"model: not a loadable TorchScript archive ({exc})") from None
    try:
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything; the message carries it
        raise ModelRejected(
            f"model: the TorchScript model fails on a batch of the project's input shape {list(shape)}: {exc}"
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter warns that a ScriptModule has no Python signature
                torch.onnx.export(
                    module,
                    (torch.from_numpy(x),),
                    str(path),
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; the message carries it
            raise ModelRejected(
                f"model: the TorchScript model cannot be exported to ONNX to be served: {exc}"
            ) from None
        graph = onnx.load(str(path))
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    diff = float(np.abs(np.asarray(got) - expected).max())
    if not np.allclose(got, expected, rtol=TORCHSCRIPT_RTOL, atol=TORCHSCRIPT_ATOL):
        raise ModelRejected(
            f"model: its ONNX export disagrees with the TorchScript model (max |Δ| {diff:.2e}; "
            f"allowed {TORCHSCRIPT_ATOL:g} + {TORCHSCRIPT_RTOL:g}·|value|)"
        )
    return graph, {"torchscript_onnx_max_abs_diff": diff}


def _served_graph(
    graph: onnx.ModelProto, shape: tuple[int, ...], n_labels: int, x: np.ndarray, name: str
) -> onnx.ModelProto:
    g = graph.graph
    initialisers = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initialisers]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ModelRejected(
            f"model: takes {len(inputs)} input(s) and gives {len(g.output)} output(s); "
            f"project {name!r} needs one input (its model input) and one output (a score per label)"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(declared) != 1 + len(shape) or any(
        d is not None and d != s for d, s in zip(declared[1:], shape, strict=False)
    ):
        shown = ["?" if d is None else d for d in declared]
        raise ModelRejected(
            f"model: input {inputs[0].name!r} has shape {shown}; project {name!r} gives "
            f"[batch, {', '.join(map(str, shape))}]"
        )
    if declared[0] is not None and declared[0] != 0:
        raise ModelRejected(
            f"model: input {inputs[0].name!r} has a fixed batch size {declared[0]}; export it with a dynamic "
            "first dimension (the model server batches requests)"
        )
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelRejected(f"model: input {inputs[0].name!r} must be float32 (the project's model input is)")
    if g.output[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelRejected(f"model: output {g.output[0].name!r} must be float32 scores")
    for taken in (INPUT, OUTPUT, SCORES):  # internal tensors that happen to carry a served name
        if taken not in (inputs[0].name, g.output[0].name):
            _rename(g, taken, f"{taken}__model")
    _rename(g, inputs[0].name, INPUT)
    _rename(g, g.output[0].name, SCORES)
    scores = _run(graph, x)
    if scores.ndim != 2 or scores.shape[1] != n_labels:
        raise ModelRejected(
            f"model: its output has shape {list(scores.shape)} for {len(x)} inputs; project {name!r} has "
            f"{n_labels} labels, so [batch, {n_labels}] (one score per label, in task.labels' order)"
        )
    probabilities = bool(np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
    if probabilities:
        g.node.append(helper.make_node("Identity", [SCORES], [OUTPUT]))
    else:
        g.node.append(helper.make_node("Softmax", [SCORES], [OUTPUT], axis=-1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", n_labels]))
    for bs in (1, min(3, len(x))):
        if _run(graph, x[:bs]).shape != (bs, n_labels):
            raise ModelRejected(f"model: a batch of {bs} gave a wrong output shape")
    return graph


def _rename(g: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for value in (*g.input, *g.output, *g.value_info, *g.initializer):
        if value.name == old:
            value.name = new
    for node in g.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _run(graph: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    try:
        sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        out = sess.run(None, {INPUT: x})[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors for a graph it cannot load or run
        raise ModelRejected(f"model: onnxruntime cannot run it on the project's input: {exc}") from None
    return np.asarray(out, dtype=np.float32)


@dataclass
class Measured:
    snapshot_id: str
    metrics: dict[str, float]


def measure(
    served: bytes,
    project: Project,
    snapshot_uri: str,
    read_object: ObjectReader | None,
    combined: CombinedMetric,
    registry: Registry | None = None,
) -> Measured:
    """The model's numbers on a snapshot's splits, with the baselines a training job runs (same names)
    and, given the registry, the production version's number on the same test split."""
    data = prepare(load_snapshot(snapshot_uri, labels=project.spec.labels), project.spec, read_object)
    return measure_on(served, data, combined, registry, project.name)


def measure_on(
    served: bytes, data: SnapshotData, combined: CombinedMetric, registry: Registry | None = None, model: str = ""
) -> Measured:
    graph = onnx.load_from_string(served)
    metrics: dict[str, float] = {}
    for split_name in ("train", "validation", "test"):
        split = getattr(data, split_name)
        if not len(split):
            continue
        probs = np.concatenate([_run(graph, split.x[i : i + 256]) for i in range(0, len(split.x), 256)])
        m = classification_metrics(split.y, probs.argmax(axis=1).astype(np.int64), data.n_classes)
        prefix = {"validation": "val"}.get(split_name, split_name)
        metrics.update({f"{prefix}_{k}": float(m[k]) for k in SCALARS})
        metrics[f"{prefix}_combined"] = combined.score(m)
    baselines = run_baselines(data, combined)
    for b in baselines:
        for split_name, value in b.combined.items():
            metrics[f"baseline_{b.name}_{split_name}_combined"] = value
        if "test" in b.metrics:
            metrics[f"baseline_{b.name}_test_accuracy"] = b.metrics["test"]["accuracy"]
    best = max(baselines, key=lambda b: b.combined.get("test", b.combined.get("validation", -1)))
    metrics["baseline_best_test_combined"] = best.combined.get("test", float("nan"))
    if registry is not None:  # the gate compares with production on this split, as for a trained job
        metrics.update(production_on_split(registry, model, data, combined))
    return Measured(data.snapshot_id, metrics)


def sample_inputs(snapshot_uri: str, project: Project, read_object: ObjectReader | None) -> np.ndarray:
    data = prepare(load_snapshot(snapshot_uri, labels=project.spec.labels), project.spec, read_object)
    return data.test.x if len(data.test) else data.train.x


def install(
    checked: CheckedModel,
    project: Project,
    registry: Registry,
    repository: Path,
    measured: Measured | None,
    git_commit: str = "",
    *,
    lineage: str = "external",
    family: str = "",
    job_id: str = "",
    hyperparameters: dict[str, str] | None = None,
) -> VersionRecord:
    """Write the version into the repository (atomically), register it as a candidate (lineage "external"
    unless a training job of the project's own code installs it)."""
    family = family or f"external_{checked.source_format}"
    name = project.name
    version = next_version(repository, name, registry.max_version(name) + 1)
    metrics = dict(measured.metrics) if measured else {}
    metrics.update({f"external_{k}": v for k, v in checked.checks.items()})
    card = model_card(
        project.spec,
        project.version,
        measured.snapshot_id if measured else "",
        {k: v for k, v in metrics.items() if k.startswith("test_")},
        lineage=lineage,
        family=family,
    )
    shape = tuple(int(d) for d in InputCodec(project.spec.input).shape)
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config = model_dir / "config.pbtxt"
    if not config.exists():
        tmp_cfg = config.with_name(f".config.pbtxt.{uuid.uuid4().hex[:8]}")
        tmp_cfg.write_text(model_config(name, "onnxruntime_onnx", shape, len(project.spec.labels), INPUT, OUTPUT))
        os.replace(tmp_cfg, config)
    staged = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}-"))
    (staged / "model.onnx").write_bytes(checked.onnx_bytes)
    original = "model.original.pt" if checked.source_format == "torchscript" else "model.original.onnx"
    (staged / original).write_bytes(checked.original)
    created = datetime.now(UTC).isoformat()
    meta = {**card, "input": INPUT, "output": OUTPUT, "created_at": created}
    (staged / "flywheel.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    target = model_dir / version
    if target.exists():
        raise ModelRejected(f"{target} already exists; versions are never overwritten")
    os.rename(staged, target)
    return registry.register(
        VersionRecord(
            model=name,
            version=int(version),
            stage="candidate",
            model_family=family,
            snapshot_id=measured.snapshot_id if measured else "",
            git_commit=git_commit,
            job_id=job_id,
            hyperparameters=hyperparameters or {},
            metrics=metrics,
            artifacts={
                "onnx": str(target / "model.onnx"),
                "original": str(target / original),
                "onnx_config": str(config),
            },
            lineage=lineage,
            project_version=project.version,
        )
    )


@dataclass
class Deployed:
    record: VersionRecord
    gate: list[str]  # why the gate would refuse it now (empty: it may be promoted)
    measured_on: str  # the snapshot it was measured on, or why it was not measured


class ExternalDeployer:
    """`flywheel models deploy`'s core: check, measure (when labels exist), install, optionally promote."""

    def __init__(
        self,
        projects: ProjectRegistry,
        registry: Registry,
        repository: Path,
        resolver: SnapshotResolver,
        read_object: ObjectReader | None,
        combined: CombinedMetric,
        git_commit: str = "",
    ) -> None:
        self._projects = projects
        self._registry = registry
        self._repository = repository
        self._resolver = resolver
        self._read_object = read_object
        self._combined = combined
        self._git_commit = git_commit
        self._lock = threading.Lock()  # one install at a time: version numbers are taken from the folder

    def deploy(self, model: str, data: bytes, snapshot_id: str = "", promote: str = "") -> Deployed:
        project = self._projects.get(model)
        if promote not in ("", "canary", "production"):
            raise InvalidRequest(f"promote: {promote!r} is not a stage; use canary or production (or leave it out)")
        uri, why = "", ""
        if snapshot_id:
            uri = self._resolver(snapshot_id)
        else:
            try:
                uri = self._resolver(self._resolver.fresh(f"measure an external model of {model}", model))
            except (LakeUnavailable, SnapshotNotFound) as exc:
                why = f"not measured: no snapshot of {model}'s labels could be cut ({exc})"
        sample = sample_inputs(uri, project, self._read_object) if uri else None
        checked = check_model(data, project, sample)
        measured = (
            measure(checked.onnx_bytes, project, uri, self._read_object, self._combined, self._registry)
            if uri
            else None
        )
        with self._lock:
            rec = install(checked, project, self._registry, self._repository, measured, self._git_commit)
        if promote:
            try:
                rec = self._registry.promote(model, rec.version, promote)
            except PromotionRefused as exc:
                raise PromotionRefused(f"{model} v{rec.version} is registered as a candidate; {exc}") from None
        return Deployed(rec, self._registry.gate(rec), measured.snapshot_id if measured else why)

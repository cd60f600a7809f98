"""Export a trained model into the model repository in Triton's layout (docs/CONTRACTS.md).

For model `m`, version `v`:

    <repo>/m/config.pbtxt + m/v/model.onnx + m/v/flywheel.json                 (FP32 ONNX, the served one)
    <repo>/m_int8/config.pbtxt + m_int8/v/model.onnx + flywheel.json            (dynamic int8 ONNX)
    <repo>/m_torchscript/config.pbtxt + m_torchscript/v/model.pt + flywheel.json (+ m.mar for TorchServe)

Each exported graph takes the project's model input (services/preprocessing) and does its own
normalisation and softmax.
ONNX outputs are checked against PyTorch on held-out data before anything is written; each
version folder is written under a hidden temporary name and renamed into place (atomic).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2 as mc

from services.trainer.errors import TrainingFailed
from services.trainer.models import WithSoftmax

MAX_BATCH = 64
# Stated tolerances: FP32 ONNX must match PyTorch to float rounding; int8 may move probabilities
# a little but must keep nearly every decision.
ONNX_ATOL = 1e-4
INT8_ATOL = 0.15
INT8_MIN_AGREEMENT = 0.97


@dataclass(frozen=True)
class ExportOptions:
    exporter: str = "dynamo"  # "dynamo" (torch.export) or "torchscript" (the legacy exporter, faster)
    int8: bool = True
    torchscript: bool = True
    mar: bool = True


@dataclass
class ExportResult:
    version: str
    artifacts: dict[str, str] = field(default_factory=dict)  # kind → path
    checks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def model_config(name: str, platform: str, shape: tuple[int, ...], n_classes: int, inp: str, out: str) -> str:
    """Triton's config.pbtxt, built as a real ModelConfig message and printed in text format."""
    cfg = mc.ModelConfig(name=name, platform=platform, max_batch_size=MAX_BATCH)
    cfg.input.add(name=inp, data_type=mc.TYPE_FP32, dims=list(shape))
    cfg.output.add(name=out, data_type=mc.TYPE_FP32, dims=[n_classes])
    cfg.dynamic_batching.SetInParent()
    cfg.version_policy.latest.num_versions = 3
    return text_format.MessageToString(cfg)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def next_version(repo: Path, model: str, at_least: int = 1) -> str:
    """One more than the highest numeric version folder of the model (and of `at_least` - 1)."""
    folder = repo / model
    existing = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.exists() else []
    return str(max([at_least - 1, *existing]) + 1)


def _onnx_export(wrapped: nn.Module, shape: tuple[int, ...], path: Path, exporter: str) -> None:
    example = torch.zeros(2, *shape, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=["features"],
                output_names=["probabilities"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=["features"],
                output_names=["probabilities"],
                dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["probabilities"], {"features": x.astype(np.float32)})[0])


def _mar(workdir: Path, model: str, version: str, pt: Path, labels: list[str]) -> Path:
    """A TorchServe archive of the TorchScript model with a small handler (model-input rows → probabilities)."""
    handler = workdir / "flywheel_handler.py"
    handler.write_text(_HANDLER)
    (workdir / "index_to_name.json").write_text(json.dumps({str(i): lbl for i, lbl in enumerate(labels)}))
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run(
        [
            str(archiver),
            "--model-name",
            model,
            "--version",
            version,
            "--serialized-file",
            str(pt),
            "--handler",
            str(handler),
            "--extra-files",
            str(workdir / "index_to_name.json"),
            "--export-path",
            str(workdir),
            "--force",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return workdir / f"{model}.mar"


_HANDLER = '''"""TorchServe handler: a JSON list of model-input rows (or {"features": [...]}) -> probabilities."""
import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class FlywheelHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for item in data:
            body = item.get("body") or item.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            if isinstance(body, dict):
                body = body["features"]
            rows.extend(body if body and isinstance(body[0], list) else [body])
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, data):
        return data.tolist()
'''


def export_model(
    model: nn.Module,
    *,
    repo: Path,
    name: str,
    version: str,
    heldout_x: np.ndarray,
    heldout_y: np.ndarray,
    flywheel: dict,
    options: ExportOptions = ExportOptions(),
) -> ExportResult:
    """Write every format for one version, checked, each version folder renamed into place."""
    model = model.eval()
    wrapped = WithSoftmax(model).eval()
    shape = tuple(int(d) for d in heldout_x.shape[1:])
    n_classes = len(flywheel["labels"])
    result = ExportResult(version)
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(heldout_x)).numpy()
    ref_pred = reference.argmax(axis=1)
    created = datetime.now(UTC).isoformat()
    repo.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repo, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        staged: list[tuple[str, str, Path, str]] = []  # (model folder, platform, staged version dir, input/output)

        # FP32 ONNX, checked against PyTorch on held-out data (several batch sizes prove the dynamic axis).
        onnx_dir = tmp / name
        onnx_dir.mkdir()
        onnx_path = onnx_dir / "model.onnx"
        _onnx_export(wrapped, shape, onnx_path, options.exporter)
        probs = onnx_probabilities(onnx_path, heldout_x)
        diff = float(np.abs(probs - reference).max()) if len(reference) else 0.0
        for bs in (1, 3, MAX_BATCH):
            if probs[:bs].shape != onnx_probabilities(onnx_path, heldout_x[:bs]).shape:
                raise TrainingFailed(f"ONNX export: batch of {bs} gave a wrong output shape")
        if diff > ONNX_ATOL:
            raise TrainingFailed(f"ONNX export disagrees with PyTorch: max |Δp| = {diff:.2e} > {ONNX_ATOL}")
        result.checks["onnx_max_abs_diff"] = diff
        result.checks["onnx_argmax_agreement"] = float((probs.argmax(1) == ref_pred).mean())
        staged.append((name, "onnxruntime_onnx", onnx_dir, "features/probabilities"))

        if options.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q_dir = tmp / f"{name}_int8"
            q_dir.mkdir()
            q_path = q_dir / "model.onnx"
            quantize_dynamic(str(onnx_path), str(q_path), weight_type=QuantType.QInt8)
            q_probs = onnx_probabilities(q_path, heldout_x)
            q_diff = float(np.abs(q_probs - reference).max()) if len(reference) else 0.0
            agreement = float((q_probs.argmax(1) == ref_pred).mean()) if len(reference) else 1.0
            fp_acc = float((ref_pred == heldout_y).mean()) if len(heldout_y) else 0.0
            q_acc = float((q_probs.argmax(1) == heldout_y).mean()) if len(heldout_y) else 0.0
            result.checks.update(
                int8_max_abs_diff=q_diff,
                int8_argmax_agreement=agreement,
                int8_accuracy=q_acc,
                fp32_accuracy=fp_acc,
                int8_accuracy_change=q_acc - fp_acc,
                onnx_bytes=float(onnx_path.stat().st_size),
                int8_bytes=float(q_path.stat().st_size),
            )
            if agreement < INT8_MIN_AGREEMENT:
                result.notes.append(
                    f"int8 model agrees with FP32 on only {agreement:.1%} of held-out rows; not written"
                )
            else:
                staged.append((f"{name}_int8", "onnxruntime_onnx", q_dir, "features/probabilities"))

        if options.torchscript:
            ts_dir = tmp / f"{name}_torchscript"
            ts_dir.mkdir()
            pt = ts_dir / "model.pt"
            scripted = torch.jit.trace(wrapped, torch.from_numpy(heldout_x[:2]))
            scripted.save(str(pt))
            loaded = torch.jit.load(str(pt))
            with torch.no_grad():
                ts_diff = float(np.abs(loaded(torch.from_numpy(heldout_x)).numpy() - reference).max())
            result.checks["torchscript_max_abs_diff"] = ts_diff
            if options.mar:
                try:
                    mar = _mar(tmp, name, version, pt, list(flywheel["labels"]))
                    shutil.move(str(mar), ts_dir / f"{name}.mar")
                except (OSError, subprocess.SubprocessError) as exc:
                    result.notes.append(f"TorchServe .mar not written: {exc}")
            staged.append((f"{name}_torchscript", "pytorch_libtorch", ts_dir, "INPUT__0/OUTPUT__0"))

        for folder, platform, vdir, io_names in staged:
            inp, out = io_names.split("/")
            meta = {**flywheel, "input": inp, "output": out, "created_at": created}
            (vdir / "flywheel.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            model_dir = repo / folder
            model_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(model_dir / "config.pbtxt", model_config(folder, platform, shape, n_classes, inp, out))
            target = model_dir / version
            if target.exists():
                raise TrainingFailed(f"{target} already exists; versions are never overwritten")
            os.rename(vdir, target)  # the version folder appears atomically
            kind = {"onnxruntime_onnx": "onnx", "pytorch_libtorch": "torchscript"}[platform]
            if folder.endswith("_int8"):
                kind = "onnx_int8"
            for f in target.iterdir():
                if f.name != "flywheel.json":
                    result.artifacts[kind if f.suffix in (".onnx", ".pt") else "mar"] = str(target / f.name)
            result.artifacts[f"{kind}_config"] = str(model_dir / "config.pbtxt")
    return result

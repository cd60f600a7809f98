"""The two benchmark models, torch → ONNX, written for each system from the same model.onnx.

    mlp: input [n, 64]        → output [n, 10]   (64-128-64-10 MLP on digit features)
    cnn: input [n, 1, 28, 28] → output [n, 10]   (two conv blocks + linear)

`write_repositories` lays out, under one folder:
    flywheel/<model>/{config.pbtxt, 1/model.onnx}              Flywheel's onnxruntime backend
    triton/<model>/{config.pbtxt, 1/model.py, 1/model.onnx}    Triton Python backend running onnxruntime
    torchserve/<model>.mar                                     TorchServe handler running onnxruntime
With runtime "torchscript", model.pt (torch.jit.trace) replaces model.onnx for Flywheel and Triton.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_BATCH = 16


@dataclass(frozen=True)
class ModelSpec:
    name: str
    shape: tuple[int, ...]  # one request's input, without the batch dimension


MODELS = {"mlp": ModelSpec("mlp", (64,)), "cnn": ModelSpec("cnn", (1, 28, 28))}


def _torch_module(name: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(-1)
        )
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
        nn.Softmax(-1),
    )


def export_onnx(spec: ModelSpec, path: Path) -> None:
    import torch

    module = _torch_module(spec.name).eval()
    example = torch.randn(2, *spec.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def export_torchscript(spec: ModelSpec, path: Path) -> None:
    import torch

    module = _torch_module(spec.name).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(module, torch.randn(2, *spec.shape)).save(str(path))


def _dims(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def flywheel_config(spec: ModelSpec, device: str, runtime: str = "onnx") -> str:
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    platform = "onnxruntime_onnx" if runtime == "onnx" else "pytorch_libtorch"
    return f"""name: "{spec.name}"
platform: "{platform}"
max_batch_size: {MAX_BATCH}
input [{{ name: "input" data_type: TYPE_FP32 dims: {_dims(spec.shape)} }}]
output [{{ name: "output" data_type: TYPE_FP32 dims: [10] }}]
dynamic_batching {{ max_queue_delay_microseconds: 5000 }}
instance_group [{{ kind: {kind} count: 1 }}]
parameters {{ key: "slo_ms" value: {{ string_value: "20" }} }}
"""


def triton_config(spec: ModelSpec, device: str, max_queue_delay_us: int = 5000) -> str:
    return f"""name: "{spec.name}"
backend: "python"
max_batch_size: {MAX_BATCH}
input [{{ name: "input" data_type: TYPE_FP32 dims: {_dims(spec.shape)} }}]
output [{{ name: "output" data_type: TYPE_FP32 dims: [10] }}]
dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}
instance_group [{{ kind: KIND_CPU count: 1 }}]
parameters {{ key: "device" value: {{ string_value: "{device}" }} }}
"""


def write_repositories(root: Path, device: str, runtime: str = "onnx") -> None:
    """runtime "onnx" everywhere; "torchscript" (GPU machines without onnxruntime-gpu): model.pt on CUDA."""
    for spec in MODELS.values():
        onnx_path = root / "onnx" / f"{spec.name}.onnx"
        export_onnx(spec, onnx_path)
        model_file = onnx_path
        if runtime == "torchscript":
            model_file = root / "torchscript" / f"{spec.name}.pt"
            export_torchscript(spec, model_file)
        filename = "model.onnx" if runtime == "onnx" else "model.pt"

        fw = root / "flywheel" / spec.name
        (fw / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(model_file, fw / "1" / filename)
        (fw / "config.pbtxt").write_text(flywheel_config(spec, device, runtime))

        tr = root / "triton" / spec.name
        (tr / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(model_file, tr / "1" / filename)
        shutil.copy(HERE / "triton_model.py", tr / "1" / "model.py")
        (tr / "config.pbtxt").write_text(triton_config(spec, device))

        if runtime != "onnx":
            continue  # the TorchServe handler runs onnxruntime only
        store = root / "torchserve"
        store.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                str(Path(sys.executable).with_name("torch-model-archiver")),
                "--model-name",
                spec.name,
                "--version",
                "1.0",
                "--serialized-file",
                str(onnx_path),
                "--handler",
                str(HERE / "torchserve_handler.py"),
                "--export-path",
                str(store),
                "--force",
            ],
            check=True,
        )


def write_triton_variant(root: Path, device: str, max_queue_delay_us: int) -> Path:
    """A copy of root/triton whose configs wait up to `max_queue_delay_us` to fill a batch; its path."""
    variant = root / f"triton-q{max_queue_delay_us}us"
    if variant.exists():
        shutil.rmtree(variant)
    shutil.copytree(root / "triton", variant, symlinks=True)
    for spec in MODELS.values():
        (variant / spec.name / "config.pbtxt").write_text(triton_config(spec, device, max_queue_delay_us))
    return variant


def sample(spec: ModelSpec, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *spec.shape), dtype=np.float32)

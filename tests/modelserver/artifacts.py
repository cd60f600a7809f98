"""Small real models written in Triton's layout for the tests (ONNX via onnx.helper, TorchScript via torch)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = 64
CLASSES = 10

MLP_CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [{{ name: "features" data_type: TYPE_FP32 dims: [64] }}]
output [{{ name: "probabilities" data_type: TYPE_FP32 dims: [10] }}]
dynamic_batching {{}}
version_policy: {{ latest {{ num_versions: {versions} }} }}
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""

TORCH_CONFIG = """name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 32
input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [64] }]
output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [10] }]
instance_group [{ kind: KIND_CPU }]
"""


def mlp_onnx(seed: int, slow: bool = False) -> onnx.ModelProto:
    """features [-1,64] -> probabilities [-1,10]; `seed` makes versions give different answers.

    `slow` adds a ~1 GFLOP MatMul that depends on the input (so it is not constant-folded) and
    contributes zero to the output: a model whose executions take long enough to fill a queue.
    """
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (FEATURES, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(32, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (32, CLASSES)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.full(CLASSES, seed * 0.01, np.float32), "b2")
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
    ]
    inits = [w1, b1, w2, b2]
    last = "logits"
    if slow:
        size = numpy_helper.from_array(np.array([1024, 1024], np.int64), "big_shape")
        zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
        inits += [size, zero]
        nodes += [
            helper.make_node("ReduceMean", ["features"], ["m"], keepdims=0),
            helper.make_node("Expand", ["m", "big_shape"], ["big"]),
            helper.make_node("MatMul", ["big", "big"], ["big2"]),
            helper.make_node("ReduceSum", ["big2"], ["s"], keepdims=0),
            helper.make_node("Mul", ["s", "zero"], ["nothing"]),
            helper.make_node("Add", ["logits", "nothing"], ["logits2"]),
        ]
        last = "logits2"
    nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_onnx_model(repo: Path, name: str, versions: list[int], num_versions: int = 3, slow: bool = False) -> None:
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(MLP_CONFIG.format(name=name, versions=num_versions))
    for v in versions:
        add_onnx_version(repo, name, v, slow=slow)


def add_onnx_version(repo: Path, name: str, version: int, slow: bool = False) -> None:
    """Write a version folder under a temporary name, then rename it into place (atomically)."""
    tmp = repo / name / f".tmp-{version}"
    tmp.mkdir(parents=True)
    onnx.save(mlp_onnx(seed=version, slow=slow), str(tmp / "model.onnx"))
    os.replace(tmp, repo / name / str(version))


def expected_probabilities(version: int, features: np.ndarray) -> np.ndarray:
    """What version `version` of the MLP answers, computed with numpy."""
    model = mlp_onnx(seed=version)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = np.maximum(features @ w["w1"] + w["b1"], 0)
    logits = h @ w["w2"] + w["b2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_torchscript_model(repo: Path, name: str) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(FEATURES, CLASSES), torch.nn.Softmax(dim=-1))
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(TORCH_CONFIG.replace("{name}", name))
    torch.jit.script(module.eval()).save(str(folder / "1" / "model.pt"))

"""The benchmark's model: a digits MLP (64 → 32 → 10, softmax) in Triton's layout, with flywheel.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.projects import load_spec_file, spec_json

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [{{ name: "features" data_type: TYPE_FP32 dims: [64] }}]
output [{{ name: "probabilities" data_type: TYPE_FP32 dims: [10] }}]
dynamic_batching {{}}
version_policy: {{ latest {{ num_versions: 3 }} }}
"""


def write_digits_model(repo: Path, name: str) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (64, 32)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (32, 10)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    onnx.save(model, str(version / "model.onnx"))
    digits = load_spec_file(Path(__file__).resolve().parents[2] / "examples" / "digits" / "project.yaml")
    card = {
        "preprocess": "project",
        "project": "digits",
        "input_spec": json.loads(spec_json(digits))["input"],
        "labels": [str(d) for d in range(10)],
        "input": "features",
    }
    (version / "flywheel.json").write_text(json.dumps({**card, "output": "probabilities", "snapshot_id": "bench"}))
    return repo

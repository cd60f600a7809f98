"""Model repository for the gateway tests: digits MLPs (tests/modelserver/artifacts.py) plus a
version whose ONNX graph fails at run time when the first feature is ≥ 0.1 (a Gather out of range)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.projects import spec_json
from tests.modelserver.artifacts import MLP_CONFIG, expected_probabilities, mlp_onnx
from tests.support.projects import example_spec

MODEL = "digits"
GOOD_VERSIONS = (1, 2)
FAILING_VERSION = 3
LABELS = [str(d) for d in range(10)]

__all__ = ["FAILING_VERSION", "GOOD_VERSIONS", "MODEL", "expected_probabilities", "write_repository"]


def failing_onnx() -> onnx.ModelProto:
    """The MLP of seed 3 plus a Gather whose index is features[:, 0] * 100: out of range at run time."""
    model = mlp_onnx(seed=FAILING_VERSION)
    graph = model.graph
    softmax = graph.node[-1]
    assert softmax.op_type == "Softmax"
    del graph.node[-1]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], np.int64), "col0"),
            numpy_helper.from_array(np.array(100.0, np.float32), "hundred"),
            numpy_helper.from_array(np.arange(10, dtype=np.float32), "table"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gather", ["features", "col0"], ["f0"], axis=1),
            helper.make_node("Mul", ["f0", "hundred"], ["f0x"]),
            helper.make_node("Cast", ["f0x"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
            helper.make_node("Mul", ["g", "zero"], ["z"]),
            helper.make_node("Add", [softmax.input[0], "z"], ["logits_checked"]),
            helper.make_node("Softmax", ["logits_checked"], ["probabilities"], axis=-1),
        ]
    )
    onnx.checker.check_model(model)
    return model


def _card(version: int) -> str:
    return json.dumps(
        {
            "preprocess": "project",
            "project": "digits",
            "input_spec": json.loads(spec_json(example_spec("digits")))["input"],
            "labels": LABELS,
            "input": "features",
            "output": "probabilities",
            "snapshot_id": f"snap-{version}",
            "metrics": {},
            "created_at": "2026-11-28T00:00:00Z",
        }
    )


def write_repository(repo: Path) -> Path:
    folder = repo / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(MLP_CONFIG.format(name=MODEL, versions=3))
    for v in (*GOOD_VERSIONS, FAILING_VERSION):
        tmp = folder / f".tmp-{v}"
        tmp.mkdir()
        model = failing_onnx() if v == FAILING_VERSION else mlp_onnx(seed=v)
        onnx.save(model, str(tmp / "model.onnx"))
        (tmp / "flywheel.json").write_text(_card(v))
        os.replace(tmp, folder / str(v))
    return repo

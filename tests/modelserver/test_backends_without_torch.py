"""The model server image has onnxruntime and no torch (docker/Dockerfile): a TorchScript model in the
repository must then be a model that failed to load, with the reason, not an ImportError that stops
the server or its model-event loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.modelserver.backends import BackendOptions, load_backend
from services.modelserver.errors import ModelLoadFailed


def test_torchscript_without_torch_is_a_load_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as in that image
    monkeypatch.delitem(sys.modules, "services.modelserver.backends.torchscript", raising=False)
    options = BackendOptions(input_names=["INPUT__0"], output_names=["OUTPUT__0"], batched=True)
    with pytest.raises(ModelLoadFailed, match=r"needs torch.*ONNX export"):
        load_backend("torchscript", tmp_path / "model.pt", options)

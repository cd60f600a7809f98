"""The model server image has onnxruntime and no torch (docker/Dockerfile), while the trainer writes a
TorchScript export next to each ONNX model into the same repository. Without torch, a TorchScript
model must be a model this server does not serve (UNAVAILABLE, with the reason), not an ImportError
that stops the server, nor a start-up failure that keeps it unready for the models it can run."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

from services.modelserver.backends import BackendOptions, load_backend
from services.modelserver.errors import ModelNotReady, RuntimeUnavailable
from services.modelserver.repository import ModelRepository
from services.modelserver.served import ServedModels, ServingOptions
from tests.modelserver.artifacts import expected_probabilities, write_onnx_model, write_torchscript_model


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as in that image
    monkeypatch.delitem(sys.modules, "services.modelserver.backends.torchscript", raising=False)


def test_torchscript_backend_without_torch_says_what_is_missing(without_torch: None, tmp_path: Path) -> None:
    options = BackendOptions(input_names=["INPUT__0"], output_names=["OUTPUT__0"], batched=True)
    with pytest.raises(RuntimeUnavailable, match=r"needs torch.*ONNX export"):
        load_backend("torchscript", tmp_path / "model.pt", options)


def test_server_without_torch_is_ready_for_its_onnx_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_onnx_model(tmp_path, "digits", [1])
    write_torchscript_model(tmp_path, "digits_torchscript")  # written with torch, served without
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "services.modelserver.backends.torchscript", raising=False)

    async def scenario() -> None:
        models = ServedModels(ModelRepository(tmp_path), ServingOptions())
        assert await models.load_all() == []  # no start-up failure: the server can be ready
        assert models.names() == ["digits"]
        rows = {name: (state, reason) for name, _v, state, reason in models.index()}
        assert rows["digits_torchscript"][0] == "UNAVAILABLE" and "needs torch" in rows["digits_torchscript"][1]
        with pytest.raises(ModelNotReady, match="needs torch"):
            models.get("digits_torchscript")
        x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
        served = models.get("digits")
        (outcome,) = served.backends[0].infer_batch([{"features": x}])
        np.testing.assert_allclose(outcome["probabilities"], expected_probabilities(1, x), rtol=1e-5, atol=1e-6)
        for version in models.served():
            await version.close()

    asyncio.run(scenario())

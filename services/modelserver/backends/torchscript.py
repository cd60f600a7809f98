"""TorchScript (`model.pt`), inputs INPUT__0.. and outputs OUTPUT__0.. in order, CUDA when available."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.modelserver.backends.base import BackendOptions, Tensors, run_batch
from services.modelserver.errors import InferenceFailed, ModelLoadFailed


class TorchScriptBackend:
    def __init__(self, module: torch.jit.ScriptModule, options: BackendOptions, device: str) -> None:
        self._module = module
        self._options = options
        self.device = device

    @classmethod
    def load(cls, model_file: Path, options: BackendOptions) -> TorchScriptBackend:
        device = "cuda" if options.prefer_gpu and torch.cuda.is_available() else "cpu"
        if options.intra_op_threads:
            torch.set_num_threads(options.intra_op_threads)  # process-wide in PyTorch
        try:
            module = torch.jit.load(str(model_file), map_location=device)
        except Exception as exc:
            raise ModelLoadFailed(f"torch could not load {model_file}: {exc}") from exc
        module.eval()
        return cls(module, options, device)

    def _run(self, inputs: Tensors) -> Tensors:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device) for n in self._options.input_names]
        with torch.inference_mode():
            result = self._module(*args)
        outs = list(result) if isinstance(result, (tuple, list)) else [result]
        names = self._options.output_names or [f"OUTPUT__{i}" for i in range(len(outs))]
        return {name: t.detach().cpu().numpy() for name, t in zip(names, outs, strict=False)}

    def infer_batch(self, batch: Sequence[Tensors]) -> list[Tensors | InferenceFailed]:
        return run_batch(self._run, batch, self._options.batched)

    def close(self) -> None:
        del self._module

"""onnxruntime: CUDA provider when onnxruntime-gpu and a GPU are present, else CPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from services.modelserver.backends.base import BackendOptions, Tensors, run_batch
from services.modelserver.errors import InferenceFailed, ModelLoadFailed


def pick_providers(prefer_gpu: bool) -> list[str]:
    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    def __init__(self, session: ort.InferenceSession, options: BackendOptions) -> None:
        self._session = session
        self._options = options
        self._outputs = options.output_names or [o.name for o in session.get_outputs()]
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    @classmethod
    def load(cls, model_file: Path, options: BackendOptions) -> OnnxBackend:
        so = ort.SessionOptions()
        if options.intra_op_threads:
            so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_file), so, providers=pick_providers(options.prefer_gpu))
        except Exception as exc:
            raise ModelLoadFailed(f"onnxruntime could not load {model_file}: {exc}") from exc
        names = {i.name for i in session.get_inputs()}
        missing = [n for n in options.input_names if n not in names]
        if missing:
            raise ModelLoadFailed(f"{model_file}: config.pbtxt inputs {missing} not in the model (has {sorted(names)})")
        return cls(session, options)

    def _run(self, inputs: Tensors) -> Tensors:
        values = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, values, strict=True))

    def infer_batch(self, batch: Sequence[Tensors]) -> list[Tensors | InferenceFailed]:
        return run_batch(self._run, batch, self._options.batched)

    def close(self) -> None:
        del self._session

"""Triton Python-backend model: onnxruntime on the model.onnx beside this file.

Triton's dynamic batcher hands `execute` a list of requests; they run as one onnxruntime call
and the outputs are split back, one response per request, in order.
"""

import json
import os
import sys

# The stub embeds Python in isolated mode (PYTHONPATH is ignored): the bench passes the venv's paths here.
sys.path[:0] = [p for p in os.environ.get("FLYWHEEL_BENCH_SYS_PATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        device = config.get("parameters", {}).get("device", {}).get("string_value", "cpu")
        folder = os.path.join(args["model_repository"], args["model_version"])
        if os.path.exists(os.path.join(folder, "model.pt")):  # GPU machines without onnxruntime-gpu
            import torch

            self.device = device
            self.module = torch.jit.load(os.path.join(folder, "model.pt"), map_location=device).eval()
            self.run = self._run_torch
            return
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=providers)
        self.run = lambda x: self.session.run(None, {"input": x})[0]

    def _run_torch(self, x):
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).cpu().numpy()

    def execute(self, requests):
        # DLPack both ways: the stub was built against numpy 1.x, whose array ABI numpy 2 changed.
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "input")) for r in requests]
        out = self.run(np.concatenate(arrays))
        responses, start = [], 0
        for a in arrays:
            n = a.shape[0]
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("output", out[start : start + n].copy())])
            )
            start += n
        return responses

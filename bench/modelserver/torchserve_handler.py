"""TorchServe handler: onnxruntime on the archived model.onnx, TorchServe's batching in front.

Each request body is the raw float32 bytes of one input; a batch runs as one onnxruntime call.
"""

import os

import numpy as np
import onnxruntime as ort

SHAPES = {"mlp": (64,), "cnn": (1, 28, 28)}


class OnnxHandler:
    def __init__(self):
        self.session = None
        self.shape = None

    def initialize(self, context):
        props = context.system_properties
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        cuda = os.environ.get("BENCH_DEVICE") == "cuda"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        model_dir = props["model_dir"]
        files = [f for f in os.listdir(model_dir) if f.endswith(".onnx")]
        self.session = ort.InferenceSession(os.path.join(model_dir, files[0]), options, providers=providers)
        self.shape = SHAPES[context.manifest["model"]["modelName"]]

    def handle(self, data, context):
        rows = []
        for item in data:
            body = item.get("body") or item.get("data")
            rows.append(np.frombuffer(bytes(body), dtype=np.float32).reshape(self.shape))
        out = self.session.run(None, {"input": np.stack(rows)})[0]
        return [o.tolist() for o in out]


_service = OnnxHandler()


def handle(data, context):
    if data is None:
        return None
    if _service.session is None:
        _service.initialize(context)
    return _service.handle(data, context)

"""Runtimes behind one interface: onnxruntime and TorchScript."""

from __future__ import annotations

from pathlib import Path

from services.modelserver.backends.base import Backend, BackendOptions
from services.modelserver.errors import InvalidModelConfig, RuntimeUnavailable

PLATFORMS = {
    "onnxruntime_onnx": ("onnx", "model.onnx"),
    "onnxruntime": ("onnx", "model.onnx"),
    "pytorch_libtorch": ("torchscript", "model.pt"),
    "pytorch": ("torchscript", "model.pt"),
}


def runtime_of(platform: str, backend: str) -> tuple[str, str]:
    """(runtime, default file name) for a config's platform/backend."""
    for key in (platform, backend):
        if key in PLATFORMS:
            return PLATFORMS[key]
    raise InvalidModelConfig(
        f"unsupported platform {platform!r} / backend {backend!r}; supported: onnxruntime_onnx, pytorch_libtorch"
    )


def load_backend(runtime: str, model_file: Path, options: BackendOptions) -> Backend:
    if runtime == "onnx":
        from services.modelserver.backends.onnx import OnnxBackend

        return OnnxBackend.load(model_file, options)
    try:
        from services.modelserver.backends.torchscript import TorchScriptBackend
    except ImportError as exc:  # the model server's image has onnxruntime and no torch
        raise RuntimeUnavailable(
            f"{model_file}: a TorchScript model needs torch, which this model server lacks ({exc}); "
            "serve the model's ONNX export, or run a model server with torch installed"
        ) from None
    return TorchScriptBackend.load(model_file, options)


__all__ = ["Backend", "BackendOptions", "load_backend", "runtime_of"]

"""The model repository on disk, in Triton's layout, and its version policy.

    <root>/<model>/config.pbtxt          ModelConfig in protobuf text format
    <root>/<model>/<version>/model.onnx  (or model.pt, or default_model_filename)

Version folders are positive integers without a leading zero; anything else (a folder being
written under a temporary name, `.tmp-3`, `03`) is ignored, so a version appears atomically
when its folder is renamed into place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from services.genproto.inference import model_config_pb2 as mc
from services.modelserver.backends import runtime_of
from services.modelserver.errors import InvalidModelConfig, ModelNotFound
from services.oip.datatypes import DTYPES, datatype_of

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk: its parsed config and the version folders it has."""

    name: str
    path: Path
    config: mc.ModelConfig
    runtime: str  # "onnx" or "torchscript"
    model_filename: str
    available: tuple[int, ...]  # ascending

    def selected(self) -> list[int]:
        """The versions the config's version_policy says to serve (default: the newest one)."""
        policy = self.config.version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return list(self.available)
        if choice == "specific":
            wanted = set(policy.specific.versions)
            return [v for v in self.available if v in wanted]
        n = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
        return list(self.available[-n:])

    def version_dir(self, version: int) -> Path:
        return self.path / str(version)


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file())

    def read(self, name: str) -> ModelSource:
        path = self.root / name
        if "/" in name or name in ("", ".", "..") or not (path / CONFIG_FILE).is_file():
            raise ModelNotFound(f"no model {name!r} in the repository {self.root} (no {name}/{CONFIG_FILE})")
        config = parse_config(path / CONFIG_FILE, name)
        runtime, default_file = runtime_of(config.platform, config.backend)
        filename = config.default_model_filename or default_file
        available = tuple(sorted(int(p.name) for p in path.iterdir() if _is_version(p) and (p / filename).exists()))
        return ModelSource(name, path, config, runtime, filename, available)


def _is_version(p: Path) -> bool:
    return p.is_dir() and p.name.isdigit() and not p.name.startswith("0")


def parse_config(path: Path, name: str) -> mc.ModelConfig:
    """Parse and check a config.pbtxt; every problem names the file and the field."""
    try:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InvalidModelConfig(f"{path}: {exc}") from None
    if config.name and config.name != name:
        raise InvalidModelConfig(f"{path}: name {config.name!r} does not match its folder {name!r}")
    config.name = name
    if config.max_batch_size < 0:
        raise InvalidModelConfig(f"{path}: max_batch_size must be >= 0")
    if not config.input:
        raise InvalidModelConfig(f"{path}: no input declared")
    for tensor in [*config.input, *config.output]:
        dtype = datatype_of(mc.DataType.Name(tensor.data_type))
        if dtype not in DTYPES:
            raise InvalidModelConfig(f"{path}: tensor {tensor.name!r} has unsupported data_type {dtype}")
        if any(d == 0 or d < -1 for d in tensor.dims):
            raise InvalidModelConfig(f"{path}: tensor {tensor.name!r} has invalid dims {list(tensor.dims)}")
    return config

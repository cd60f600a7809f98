"""A snapshot's examples → the project's model inputs, by the same preprocessing the gateway runs.

When a project's model input travels with each example (tabular codes, a tiny image's pixels:
`materialised`), the snapshot's `features` are the model input. Otherwise (larger images, texts)
the features are only a signature for the monitor, and each example's stored original is read
back and encoded here by services/preprocessing, exactly as `:predict` will encode it when the
model is served — the training/serving skew test (tests/trainer/test_inputs.py) holds us to it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from services.preprocessing import InputCodec, InvalidField
from services.projects.spec import ProjectSpec
from services.trainer.data.snapshot import SnapshotData, Split
from services.trainer.errors import SnapshotInvalid

ObjectReader = Callable[[str], bytes]
READ_THREADS = 4


def prepare(data: SnapshotData, project: ProjectSpec, read_object: ObjectReader | None) -> SnapshotData:
    """The same snapshot with `x` as model inputs of the project's shape (features kept aside)."""
    codec = InputCodec(project.input)
    splits = {}
    for name in ("train", "validation", "test"):
        split: Split = getattr(data, name)
        splits[name] = replace(split, x=_inputs(split, codec, read_object, name), features=split.x)
    return replace(data, project=project, **splits)


def _inputs(split: Split, codec: InputCodec, read_object: ObjectReader | None, name: str) -> np.ndarray:
    shape = codec.shape
    if codec.materialised:
        size = int(np.prod(shape))
        if len(split) and split.x.shape[1] != size:
            raise SnapshotInvalid(
                f"{name}: examples have {split.x.shape[1]} features; the project's {codec.kind} input has {size} "
                "(a snapshot cut for another project?)"
            )
        return np.ascontiguousarray(split.x.reshape(len(split), *shape), dtype=np.float32)
    if read_object is None:
        raise SnapshotInvalid(f"{name}: this project's inputs are re-read from stored objects, and no store is set")
    if len(split.object_uris) != len(split):
        raise SnapshotInvalid(f"{name}: the snapshot has no object_uri column for its {len(split)} examples")

    def encode(uri: str) -> np.ndarray:
        try:
            return codec.encode_stored(read_object(uri))
        except InvalidField as exc:
            raise SnapshotInvalid(f"{name}: the stored original {uri} no longer decodes: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SnapshotInvalid(f"{name}: cannot read the stored original {uri}: {exc}") from None

    out = np.empty((len(split), *shape), dtype=np.float32)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for i, x in enumerate(pool.map(encode, split.object_uris)):
            out[i] = x
    return out

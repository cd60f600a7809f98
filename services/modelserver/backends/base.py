"""The backend interface and the batch plumbing every runtime shares.

A backend instance runs one batch at a time (the batcher gives each instance to one batch);
`infer_batch` returns exactly one outcome per request, in order, and a request that fails
gets its own `InferenceFailed` without failing the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.modelserver.errors import InferenceFailed

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class BackendOptions:
    input_names: list[str]
    output_names: list[str]
    batched: bool  # max_batch_size > 0: inputs carry a leading batch axis
    intra_op_threads: int = 1
    prefer_gpu: bool = True  # instance_group kind is not KIND_CPU


class Backend(Protocol):
    device: str

    def infer_batch(self, batch: Sequence[Tensors]) -> list[Tensors | InferenceFailed]: ...

    def close(self) -> None: ...


def run_batch(
    run: Callable[[Tensors], Tensors], batch: Sequence[Tensors], batched: bool
) -> list[Tensors | InferenceFailed]:
    """Concatenate along the batch axis, run once, split back; on failure isolate each request."""
    if not batch:
        return []
    if not batched or len(batch) == 1:
        return [_run_one(run, t) for t in batch]
    sizes = [len(next(iter(t.values()))) for t in batch]
    stacked = {name: np.concatenate([t[name] for t in batch], axis=0) for name in batch[0]}
    try:
        outputs = run(stacked)
    except Exception:  # noqa: BLE001 - retry one by one so only the bad request fails
        return [_run_one(run, t) for t in batch]
    bounds = np.cumsum([0, *sizes])
    return [{name: out[bounds[i] : bounds[i + 1]] for name, out in outputs.items()} for i in range(len(batch))]


def _run_one(run: Callable[[Tensors], Tensors], tensors: Tensors) -> Tensors | InferenceFailed:
    try:
        return run(tensors)
    except Exception as exc:  # noqa: BLE001 - the runtime's error becomes this request's answer
        return InferenceFailed(f"model execution failed: {type(exc).__name__}: {exc}")

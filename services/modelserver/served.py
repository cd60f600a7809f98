"""Loaded model versions, and the hot swap.

Loading a model reads its folder, works out which versions the policy wants, loads and warms
up every new one off the event loop (the old ones keep serving meanwhile), then replaces the
model's routing table in one assignment. Versions that dropped out are closed in the
background: their batcher stops taking requests and finishes what it already queued, so
in-flight requests finish on the version they started on and none fails.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.genproto.inference import model_config_pb2 as mc
from services.modelserver.backends import Backend, BackendOptions, load_backend
from services.modelserver.batching import Batcher, BatcherConfig, CostModel, Inputs
from services.modelserver.errors import (
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ModelServerError,
    RuntimeUnavailable,
)
from services.modelserver.metrics import VersionMetrics
from services.modelserver.repository import ModelRepository, ModelSource
from services.oip.datatypes import DTYPES, datatype_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingOptions:
    adaptive: bool = True
    queue_bound: int = 1024
    intra_op_threads: int = 1
    instances: int = 0  # 0: from config.pbtxt
    default_slo_s: float = 0.05
    inline_below_s: float = 0.001


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str  # protocol name, e.g. FP32
    dtype: np.dtype | None  # None: a datatype numpy does not hold (no request can match it)
    dims: tuple[int, ...]  # without the batch axis; -1 = any
    optional: bool


@dataclass
class ServedVersion:
    name: str
    version: int
    config: mc.ModelConfig
    batcher: Batcher
    backends: list[Backend]
    metrics: VersionMetrics
    slo_s: float
    executor: ThreadPoolExecutor
    loaded_at: float = field(default_factory=time.time)

    @property
    def batched(self) -> bool:
        return self.config.max_batch_size > 0

    @functools.cached_property
    def input_specs(self) -> list[InputSpec]:
        """config.pbtxt's inputs, read once (validation runs per request)."""
        specs = []
        for i in self.config.input:
            datatype = datatype_of(mc.DataType.Name(i.data_type))
            specs.append(InputSpec(i.name, datatype, DTYPES.get(datatype), tuple(i.dims), i.optional))
        return specs

    @functools.cached_property
    def output_names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.config.output)

    async def close(self) -> None:
        await self.batcher.close()
        self.executor.shutdown(wait=True)
        for b in self.backends:
            b.close()
        self.metrics.unloaded()


@dataclass
class ModelState:
    state: str  # READY, UNAVAILABLE, LOADING
    reason: str = ""


class ServedModels:
    def __init__(self, repository: ModelRepository, options: ServingOptions) -> None:
        self.repository = repository
        self.options = options
        self._tables: dict[str, dict[int, ServedVersion]] = {}
        self._states: dict[str, ModelState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task] = set()

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> ServedVersion:
        table = self._tables.get(name)
        if not table:
            state = self._states.get(name)
            if state is not None and state.state != "READY":
                raise ModelNotReady(f"model {name!r} is {state.state.lower()}: {state.reason}".rstrip(": "))
            raise ModelNotFound(f"model {name!r} is not loaded; loaded models: {', '.join(self.names()) or 'none'}")
        if not version:
            return table[max(table)]
        if not version.isdigit() or int(version) not in table:
            loaded = ", ".join(str(v) for v in sorted(table))
            raise ModelNotFound(f"model {name!r} has no version {version!r} loaded; loaded versions: {loaded}")
        return table[int(version)]

    def names(self) -> list[str]:
        return sorted(n for n, t in self._tables.items() if t)

    def served(self) -> list[ServedVersion]:
        return [served for name in self.names() for _, served in sorted(self._tables[name].items())]

    def index(self) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) for every model in the repository or loaded."""
        rows: list[tuple[str, str, str, str]] = []
        for name in sorted(set(self.repository.names()) | set(self._tables) | set(self._states)):
            table = self._tables.get(name, {})
            for version in sorted(table):
                rows.append((name, str(version), "READY", ""))
            if not table:
                state = self._states.get(name, ModelState("UNAVAILABLE", "unloaded"))
                rows.append((name, "", state.state, state.reason))
        return rows

    # -- lifecycle ------------------------------------------------------------------------
    async def load_all(self) -> list[str]:
        """Load every model in the repository; return the ones that failed."""
        failed = []
        for name in self.repository.names():
            try:
                await self.load(name)
            except RuntimeUnavailable as exc:
                # Not a broken model: this server lacks its runtime. It stays UNAVAILABLE with the reason,
                # and the server is ready for the models it can run.
                log.warning("model not served here", extra={"model": name, "error": exc.message})
            except ModelServerError as exc:
                log.error("model failed to load", extra={"model": name, "error": exc.message})
                failed.append(name)
        return failed

    async def load(self, name: str) -> list[int]:
        """(Re)load a model from disk per its version policy; return the versions now serving."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            source = await asyncio.to_thread(self.repository.read, name)
            wanted = source.selected()
            if not wanted:
                raise ModelLoadFailed(f"model {name!r} has no version folder with {source.model_filename}")
            current = dict(self._tables.get(name, {}))
            if name not in self._tables:
                self._states[name] = ModelState("LOADING")
            new: dict[int, ServedVersion] = {}
            try:
                for version in wanted:
                    if version not in current:
                        new[version] = await self._load_version(source, version)
            except ModelServerError as exc:
                for served in new.values():
                    await served.close()
                if not current:
                    self._states[name] = ModelState("UNAVAILABLE", exc.message)
                raise
            table = {v: current.get(v) or new[v] for v in wanted}
            self._tables[name] = table  # the swap: one assignment, seen by the next lookup
            self._states[name] = ModelState("READY")
            retired = [served for v, served in current.items() if v not in table]
            self._retire(retired)
            log.info(
                "model loaded",
                extra={
                    "model": name,
                    "versions": sorted(table),
                    "new": sorted(new),
                    "retired": [r.version for r in retired],
                },
            )
            return sorted(table)

    async def unload(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            table = self._tables.pop(name, None)
            if table is None and name not in self.repository.names():
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._states[name] = ModelState("UNAVAILABLE", "unloaded")
            self._retire(list((table or {}).values()))
            log.info("model unloaded", extra={"model": name})

    async def close(self) -> None:
        """Drain every version (queued requests finish), then free the runtimes."""
        tables, self._tables = self._tables, {}
        await asyncio.gather(*(served.close() for t in tables.values() for served in t.values()))
        if self._retiring:
            await asyncio.gather(*self._retiring)

    def _retire(self, versions: list[ServedVersion]) -> None:
        for served in versions:
            task = asyncio.get_running_loop().create_task(served.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _load_version(self, source: ModelSource, version: int) -> ServedVersion:
        config = mc.ModelConfig()
        config.CopyFrom(source.config)
        count = self.options.instances or max(1, sum(g.count or 1 for g in config.instance_group) or 1)
        prefer_gpu = not any(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
        options = BackendOptions(
            input_names=[i.name for i in config.input],
            output_names=[o.name for o in config.output],
            batched=config.max_batch_size > 0,
            intra_op_threads=self.options.intra_op_threads,
            prefer_gpu=prefer_gpu,
        )
        model_file = source.version_dir(version) / source.model_filename
        backends, seeds = await asyncio.to_thread(_build, source.runtime, model_file, options, config, count)
        cost = CostModel()
        for rows, seconds in seeds:
            cost.observe(rows, seconds)
        metrics = VersionMetrics(source.name, str(version))
        executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"{source.name}-v{version}")
        slo = config.parameters["slo_ms"].string_value if "slo_ms" in config.parameters else ""
        slo_s = float(slo) / 1000 if slo else self.options.default_slo_s
        batcher = Batcher(
            BatcherConfig(
                max_batch_rows=config.max_batch_size,
                instances=count,
                queue_bound=self.options.queue_bound,
                # As in Triton, a model batches requests together only when its config asks for it.
                adaptive=self.options.adaptive and config.HasField("dynamic_batching"),
                inline_below_s=self.options.inline_below_s,
                slo_s=slo_s,
                name=f"model {source.name!r} v{version}",
            ),
            run=lambda i, batch: backends[i].infer_batch(batch),
            executor=executor,
            cost=cost,
            observer=metrics,
        )
        metrics.follow(
            lambda: batcher.depth, lambda: batcher.cost.a, lambda: batcher.cost.b, lambda: batcher.aimd.limit
        )
        batcher.start()
        log.info(
            "version ready",
            extra={
                "model": source.name,
                "version": version,
                "instances": count,
                "device": backends[0].device,
                "cost_a": cost.a,
                "cost_b": cost.b,
            },
        )
        return ServedVersion(source.name, version, config, batcher, backends, metrics, slo_s, executor)


def _build(
    runtime: str, model_file: Path, options: BackendOptions, config: mc.ModelConfig, count: int
) -> tuple[list[Backend], list[tuple[int, float]]]:
    """Load `count` instances and warm each up; return them and the warm-up timings (rows, s)."""
    backends: list[Backend] = []
    try:
        for _ in range(count):
            backends.append(load_backend(runtime, model_file, options))
        seeds: list[tuple[int, float]] = []
        sizes = sorted({1, max(1, config.max_batch_size // 2), max(1, config.max_batch_size)})
        for backend in backends:
            for rows in sizes:
                sample = warmup_inputs(config, rows)
                for attempt in range(3):
                    start = time.perf_counter()
                    outcome = backend.infer_batch([sample])[0]
                    elapsed = time.perf_counter() - start
                    if isinstance(outcome, Exception):
                        raise ModelLoadFailed(f"{model_file}: warm-up failed: {outcome.message}")
                    if attempt:  # the first run of each size pays one-off costs
                        seeds.append((rows, elapsed))
    except ModelServerError:
        for b in backends:
            b.close()
        raise
    return backends, seeds


def warmup_inputs(config: mc.ModelConfig, rows: int) -> Inputs:
    out: Inputs = {}
    for spec in config.input:
        dims = [d if d > 0 else 1 for d in spec.dims]
        shape = [rows, *dims] if config.max_batch_size > 0 else dims
        out[spec.name] = np.zeros(shape, dtype=DTYPES[datatype_of(mc.DataType.Name(spec.data_type))])
    return out

"""The transport-free data plane: health, metadata, inference, repository; typed in, typed out."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.genproto.inference import model_config_pb2 as mc
from services.modelserver.batching import bucket_key
from services.modelserver.errors import InvalidInput, ModelServerError, Overloaded, ShuttingDown
from services.modelserver.metrics import LOOP_REFUSED
from services.modelserver.served import InputSpec, ServedModels, ServedVersion
from services.oip.datatypes import datatype_of, datatype_of_array
from services.oip.messages import InferRequest, InferResponse
from services.transportkit.looplag import LoopLag

log = logging.getLogger(__name__)

SERVER_NAME = "flywheel-modelserver"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["model_repository", "model_configuration", "statistics", "binary_tensor_data"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class DataPlane:
    def __init__(self, models: ServedModels, loop_lag: LoopLag | None = None) -> None:
        self.models = models
        self.loop_lag = loop_lag if loop_lag is not None else LoopLag(0)
        self.started = False  # set once the start-up loads are done
        self.stopping = False  # draining: unready, still serving (see __main__)
        self.startup_failures: list[str] = []
        # Called with ready() after anything that may change it (the gRPC health status follows).
        self.on_readiness: list[Callable[[bool], Awaitable[None]]] = []

    async def readiness_changed(self) -> None:
        for listener in self.on_readiness:
            await listener(self.ready())

    # -- health ---------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self.stopping and not self.startup_failures

    def readiness(self) -> tuple[bool, str]:
        if not self.started:
            return False, "loading models"
        if self.stopping:
            return False, "draining"
        if self.startup_failures:
            return False, f"models failed to load: {', '.join(self.startup_failures)}"
        return True, f"{len(self.models.names())} model(s) loaded"

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.models.get(name, version)
        except ModelServerError:
            return False
        return not self.stopping

    # -- metadata -------------------------------------------------------------------------
    def server_metadata(self) -> tuple[str, str, list[str]]:
        return SERVER_NAME, SERVER_VERSION, EXTENSIONS

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        served = self.models.get(name, version)
        batch = [-1] if served.batched else []
        return ModelMetadata(
            name=name,
            versions=[version] if version else [str(v.version) for v in self.models.served() if v.name == name],
            platform=served.config.platform or served.config.backend,
            inputs=[TensorSpec(i.name, _dt(i.data_type), [*batch, *i.dims]) for i in served.config.input],
            outputs=[TensorSpec(o.name, _dt(o.data_type), [*batch, *o.dims]) for o in served.config.output],
        )

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.models.get(name, version).config

    def statistics(self, name: str = "", version: str = "") -> list[ServedVersion]:
        if name:
            if version:
                return [self.models.get(name, version)]
            self.models.get(name)  # NOT_FOUND when unknown
            return [served for served in self.models.served() if served.name == name]
        return self.models.served()

    # -- repository -----------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        rows = self.models.index()
        return [r for r in rows if r[2] == "READY"] if ready_only else rows

    async def load(self, name: str, parameters: list[str] | None = None) -> list[int]:
        unsupported = [p for p in parameters or [] if p == "config" or p.startswith("file:")]
        if unsupported:
            raise InvalidInput(
                f"load parameters {unsupported} are not supported: write the version folder and config.pbtxt into "
                "the repository, then load the model by name"
            )
        versions = await self.models.load(name)
        if name in self.startup_failures:
            self.startup_failures = [n for n in self.startup_failures if n != name]
            await self.readiness_changed()
        return versions

    async def unload(self, name: str) -> None:
        await self.models.unload(name)

    # -- inference ------------------------------------------------------------------------
    def admit(self) -> None:
        """Before a transport reads an inference request: Overloaded (429 / RESOURCE_EXHAUSTED) while the event
        loop is behind, so a backlog the batcher's queue cannot see stops growing (transportkit/looplag.py)."""
        lag = self.loop_lag
        if lag.behind:
            LOOP_REFUSED.inc()
            retry_ms = max(1, round(lag.lag_s * 1000))
            raise Overloaded(
                f"the model server is behind: its event loop runs {lag.lag_s * 1000:.0f} ms late, over "
                f"FLYWHEEL_MODELSERVER_MAX_LOOP_LAG_MS={lag.limit_s * 1000:g}; retry after {retry_ms} ms, "
                "or send fewer requests at once",
                retry_after_s=retry_ms / 1000,
            )

    async def infer(self, request: InferRequest) -> InferResponse:
        # While draining (`stopping`) requests are still served: the server is unready, so callers move
        # away, and one that still arrives is answered rather than refused (a 503 trips its breaker).
        start = time.monotonic()
        served = self.models.get(request.model, request.version)
        try:
            rows = self._validate(served, request)
            # A client's deadline is hard (past it, not computed); without one the SLO is soft: it orders
            # the queue and sizes batches, and the request is answered however late.
            hard = request.timeout_s is not None
            deadline = start + (request.timeout_s if request.timeout_s is not None else served.slo_s)
            try:
                key = bucket_key(request.inputs, served.batched)
                outputs = await served.batcher.submit(request.inputs, rows, key, deadline, hard=hard)
            except ShuttingDown:
                # Lost a race with a hot swap: the version retired between lookup and submit.
                served = self.models.get(request.model, request.version)
                key = bucket_key(request.inputs, served.batched)
                outputs = await served.batcher.submit(request.inputs, rows, key, deadline, hard=hard)
        except ModelServerError as exc:
            served.metrics.failed(time.monotonic() - start, type(exc).__name__)
            raise
        served.metrics.answered(time.monotonic() - start)
        if request.outputs:
            outputs = {name: outputs[name] for name in request.outputs}
        return InferResponse(request.model, str(served.version), request.id, outputs)

    def _validate(self, served: ServedVersion, request: InferRequest) -> int:
        """Check names, datatypes and shapes against config.pbtxt; return the batch rows."""
        config = served.config
        specs = served.input_specs
        inputs = request.inputs
        if len(inputs) > len(specs) or any(name not in inputs for name in (s.name for s in specs)):
            self._check_names(served, request)
        batched = served.batched
        rows: int | None = None
        for spec in specs:
            array = inputs.get(spec.name)
            if array is None:
                continue  # optional (_check_names refused a missing required one)
            name = spec.name
            if array.dtype != spec.dtype:
                model = f"{served.name} v{served.version}"
                got_dt = datatype_of_array(array)
                raise InvalidInput(f"{model}: input {name!r} has datatype {got_dt}, expected {spec.datatype}")
            shape = array.shape
            dims = spec.dims
            if batched:
                if len(shape) != len(dims) + 1 or not _dims_match(shape[1:], dims):
                    raise InvalidInput(
                        f"{served.name} v{served.version}: input {name!r} has shape {list(shape)}, "
                        f"expected {_shape(config, spec)}"
                    )
                n = shape[0]
                if n < 1 or n > config.max_batch_size:
                    raise InvalidInput(
                        f"{served.name} v{served.version}: input {name!r} has batch size {n}, "
                        f"expected 1..{config.max_batch_size} (max_batch_size)"
                    )
                if rows is not None and n != rows:
                    raise InvalidInput(
                        f"{served.name} v{served.version}: input {name!r} has batch size {n}, other inputs have {rows}"
                    )
                rows = n
            elif len(shape) != len(dims) or not _dims_match(shape, dims):
                raise InvalidInput(
                    f"{served.name} v{served.version}: input {name!r} has shape {list(shape)}, "
                    f"expected {_shape(config, spec)}"
                )
        if request.outputs:
            known_outputs = served.output_names
            for name in request.outputs:
                if known_outputs and name not in known_outputs:
                    listed = ", ".join(o.name for o in config.output)
                    raise InvalidInput(f"{served.name} v{served.version}: unknown output {name!r}; outputs: {listed}")
        return rows or 1

    def _check_names(self, served: ServedVersion, request: InferRequest) -> None:
        """Refuse an unknown input or a missing required one, naming what the model expects."""
        model = f"{served.name} v{served.version}"
        expected = {s.name: s for s in served.input_specs}
        for name in request.inputs:
            if name not in expected:
                raise InvalidInput(f"{model}: unknown input {name!r}; expected inputs: {', '.join(expected)}")
        for name, spec in expected.items():
            if name not in request.inputs and not spec.optional:
                raise InvalidInput(f"{model}: missing input {name!r} ({spec.datatype} {_shape(served.config, spec)})")


def _dims_match(shape: Sequence[int], dims: Sequence[int]) -> bool:
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _dt(data_type: int) -> str:
    return datatype_of(mc.DataType.Name(data_type))


def _shape(config: mc.ModelConfig, spec: InputSpec) -> list[int]:
    return [-1, *spec.dims] if config.max_batch_size > 0 else list(spec.dims)

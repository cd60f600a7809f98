"""KServe v2 gRPC (`inference.GRPCInferenceService`) on grpc.aio, plus Triton's config and statistics RPCs."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.modelserver.dataplane import DataPlane
from services.modelserver.errors import InvalidInput, ModelServerError
from services.modelserver.metrics import Duration
from services.modelserver.registry import ServedVersion
from services.modelserver.tensors import DTYPES, InferRequest, InferResult, datatype_of_array, decode_raw, decode_values
from services.modelserver.transport.status import retry_after_s, status_of
from services.oip import CONTENTS_FIELD
from services.telemetry import request_id_var

log = logging.getLogger(__name__)

R = TypeVar("R")


def guarded(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """The gRPC boundary: domain errors -> status by the one table; anything else -> INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except ModelServerError as exc:
            _, code = status_of(exc)
            retry = retry_after_s(exc)
            if retry is not None:
                context.set_trailing_metadata((("retry-after-ms", str(max(1, math.ceil(retry * 1000)))),))
            await context.abort(code, exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error", extra={"rpc": method.__name__})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")

    return wrapper


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dp: DataPlane, max_request_bytes: int) -> None:
        self._dp = dp
        self._max_bytes = max_request_bytes

    @guarded
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dp.live())

    @guarded
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dp.ready())

    @guarded
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    @guarded
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        name, version, extensions = self._dp.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @guarded
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        md = self._dp.model_metadata(request.name, request.version)
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=md.name,
            versions=md.versions,
            platform=md.platform,
            inputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in md.inputs],
            outputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in md.outputs],
        )

    @guarded
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self._dp.model_config(request.name, request.version))

    @guarded
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        served = self._dp.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[stats_message(sv) for sv in served])

    @guarded
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        request_id_var.set(request.id)
        infer_request = decode_infer(request, context.time_remaining(), self._max_bytes)
        result = await self._dp.infer(infer_request)
        return encode_infer(result, raw=bool(request.raw_input_contents) or not request.inputs)

    @guarded
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        mi = pb.RepositoryIndexResponse.ModelIndex
        rows = self._dp.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[mi(name=n, version=v, state=s, reason=r) for n, v, s, r in rows])

    @guarded
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self._dp.load(request.model_name, list(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @guarded
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dp.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def decode_infer(request: pb.ModelInferRequest, time_remaining: float | None, max_bytes: int) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; expected one per input")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        if raw:
            inputs[name] = decode_raw(name, datatype, shape, raw[i], max_bytes)
            continue
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}")
        inputs[name] = decode_values(name, datatype, shape, getattr(tensor.contents, field), max_bytes)
    timeouts = [t for t in (time_remaining, _timeout_param(request)) if t is not None]
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        inputs=inputs,
        id=request.id,
        outputs=[o.name for o in request.outputs],
        timeout_s=min(timeouts) if timeouts else None,
    )


def _timeout_param(request: pb.ModelInferRequest) -> float | None:
    """Triton's `timeout` request parameter, in microseconds."""
    if "timeout" not in request.parameters:
        return None
    p = request.parameters["timeout"]
    choice = p.WhichOneof("parameter_choice")
    if choice not in ("int64_param", "uint64_param", "double_param") or getattr(p, choice) < 0:
        raise InvalidInput("parameter 'timeout' must be a non-negative number of microseconds")
    value = float(getattr(p, choice))
    return value / 1e6 if value else None  # 0 means none, as in Triton


def encode_infer(result: InferResult, raw: bool) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=result.id)
    for name, array in result.outputs.items():
        datatype = datatype_of_array(array)
        out = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        else:
            getattr(out.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return response


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def stats_message(sv: ServedVersion) -> pb.ModelStatistics:
    s = sv.metrics.stats
    return pb.ModelStatistics(
        name=sv.name,
        version=str(sv.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            # Input/output copies are part of compute here; perf_analyzer needs the three counts equal.
            compute_input=pb.StatisticDuration(count=s.compute.count),
            compute_infer=_duration(s.compute),
            compute_output=pb.StatisticDuration(count=s.compute.count),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=n,
                compute_input=pb.StatisticDuration(count=d.count),
                compute_infer=_duration(d),
                compute_output=pb.StatisticDuration(count=d.count),
            )
            for n, d in sorted(s.batches.items())
        ],
    )


def build_grpc_server(dp: DataPlane, max_request_bytes: int) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    # Accept messages well over the per-tensor limit so an oversize tensor is answered
    # INVALID_ARGUMENT naming the input, rather than a transport-level refusal.
    limit = 4 * max_request_bytes + (1 << 20)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # A port this server binds is its own: no second process silently sharing it.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dp, max_request_bytes), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

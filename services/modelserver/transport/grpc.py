"""KServe v2 gRPC (`inference.GRPCInferenceService`), plus Triton's config and statistics RPCs: the servicer, and
the front that serves it (grpc.aio, or the compiled one of transport/compiled.py; both run transport/dispatch.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.modelserver.dataplane import DataPlane
from services.modelserver.metrics import Duration
from services.modelserver.served import ServedVersion
from services.modelserver.transport.dispatch import AioDispatch, model_server_dispatch
from services.modelserver.transport.status import ERRORS
from services.oip import grpc_codec
from services.telemetry import request_id_var, valid_request_id
from services.transportkit.auth import TrustedCallers
from services.transportkit.grpc import guarded_aio
from services.transportkit.tls import Tls

log = logging.getLogger(__name__)
guarded = guarded_aio(ERRORS)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, max_request_bytes: int) -> None:
        self._dataplane = dataplane
        self._max_bytes = max_request_bytes

    @guarded
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    @guarded
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    @guarded
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dataplane.model_ready(request.name, request.version))

    @guarded
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        name, version, extensions = self._dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @guarded
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        metadata = self._dataplane.model_metadata(request.name, request.version)
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
            outputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
        )

    @guarded
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self._dataplane.model_config(request.name, request.version))

    @guarded
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        served = self._dataplane.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[stats_message(version) for version in served])

    @guarded
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self._dataplane.admit()
        request_id_var.set(valid_request_id(request.id))
        decoded = grpc_codec.decode_request(request, context.time_remaining(), self._max_bytes)
        response = await self._dataplane.infer(decoded)
        return grpc_codec.encode_response(response, raw=grpc_codec.wants_raw(request))

    @guarded
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        mi = pb.RepositoryIndexResponse.ModelIndex
        rows = self._dataplane.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[mi(name=n, version=v, state=s, reason=r) for n, v, s, r in rows])

    @guarded
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self._dataplane.load(request.model_name, list(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @guarded
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def stats_message(served: ServedVersion) -> pb.ModelStatistics:
    s = served.metrics.stats
    return pb.ModelStatistics(
        name=served.name,
        version=str(served.version),
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


def message_limit(max_request_bytes: int) -> int:
    """The largest message either front takes or sends: well over the per-tensor limit, so an oversize
    tensor is answered INVALID_ARGUMENT naming the input rather than refused by the transport."""
    return 4 * max_request_bytes + (1 << 20)


class GrpcFront(Protocol):
    port: int

    async def stop(self, grace_s: float) -> None: ...


class AioFront:
    """The grpc.aio server, running the shared dispatch through one generic handler."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace_s)


async def start_grpc_front(
    kind: str,
    dataplane: DataPlane,
    max_request_bytes: int,
    callers: TrustedCallers,
    tls: Tls,
    address: tuple[str, int],
    on_call: Callable[[], None] | None = None,
) -> tuple[GrpcFront, health.aio.HealthServicer]:
    """The gRPC front `kind` ("aio" or "compiled", see compiled.choose_front) serving on `address`: every
    RPC but health needs a trusted caller's credential, checked by the one dispatch both fronts share;
    `on_call`: called as each call starts (the drain's activity, transportkit/drain.py)."""
    health_servicer = health.aio.HealthServicer()
    dispatch = model_server_dispatch(InferenceServicer(dataplane, max_request_bytes), health_servicer, callers, on_call)
    limit = message_limit(max_request_bytes)
    host, port = address
    if kind == "compiled":
        from services.modelserver.transport.compiled import CompiledFront

        return CompiledFront(dispatch, host, port, limit), health_servicer
    server = grpc.aio.server(
        handlers=[AioDispatch(dispatch)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # A port this server binds is its own: no second process silently sharing it.
            ("grpc.so_reuseport", 0),
        ],
    )
    # Health's Watch (a stream) stays with the stock servicer; Check runs through the dispatch too.
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = tls.add_port(server, f"{host}:{port}")
    await server.start()
    return AioFront(server, bound), health_servicer


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

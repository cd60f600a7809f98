"""KServe v2 gRPC (`inference.GRPCInferenceService`) on grpc.aio, plus Triton's config and statistics RPCs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.modelserver.dataplane import DataPlane
from services.modelserver.metrics import Duration
from services.modelserver.served import ServedVersion
from services.modelserver.transport.status import ERRORS
from services.oip import grpc_codec
from services.telemetry import request_id_var, valid_request_id
from services.transportkit.auth import AioGrpcCallerCheck, TrustedCallers
from services.transportkit.grpc import AioStrictParsing, guarded_aio

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


def build_grpc_server(
    dataplane: DataPlane,
    max_request_bytes: int,
    callers: TrustedCallers,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server: every RPC but health needs a trusted caller's credential; `interceptors` run first."""
    # Accept messages well over the per-tensor limit so an oversize tensor is answered
    # INVALID_ARGUMENT naming the input, rather than a transport-level refusal.
    limit = 4 * max_request_bytes + (1 << 20)
    server = grpc.aio.server(
        interceptors=[*interceptors, AioGrpcCallerCheck(callers), AioStrictParsing()],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # A port this server binds is its own: no second process silently sharing it.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, max_request_bytes), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

"""gRPC: `inference.GRPCInferenceService`, so tritonclient and perf_analyzer can point at the gateway.

Each RPC parses its request, admits the caller's key for the RPC's scope, makes one `Gateway`
call and converts the answer back; errors go through the one status table. Requests arrive as
bytes and are parsed here, so a malformed protobuf is INVALID_ARGUMENT (the stock deserializer
would make it INTERNAL). Metadata: `authorization: Bearer <key>` or `x-api-key`,
`x-flywheel-sticky-key`, `x-flywheel-synthetic`; the call's own deadline is propagated. Messages
over the size limit are refused by gRPC itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.gateway.auth import Guard
from services.gateway.dataplane import Gateway
from services.gateway.errors import InvalidInput
from services.gateway.transport.observe import observe
from services.gateway.transport.origin import origin_of
from services.gateway.transport.status import ERRORS
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip import grpc_codec
from services.transportkit.grpc import guarded_aio

SERVICE = "inference.GRPCInferenceService"
Context = grpc.aio.ServicerContext
# (the parsed request, the caller's metadata, its key id, the call's context) → the answer
Handler = Callable[[Any, dict[str, str], str, Context], Awaitable[Message]]


class GatewayServicer:
    """The RPCs, each as one Gateway call."""

    def __init__(self, gateway: Gateway, max_request_bytes: int) -> None:
        self._gateway = gateway
        self._max_bytes = max_request_bytes

    async def model_infer(
        self, request: pb.ModelInferRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        decoded = grpc_codec.decode_request(request, context.time_remaining(), self._max_bytes)
        answer = await self._gateway.infer(decoded, origin_of(metadata, key_id))
        return grpc_codec.encode_response(answer.response, raw=grpc_codec.wants_raw(request))

    async def server_live(self, request: Any, metadata: dict[str, str], key_id: str, context: Context) -> Message:
        return pb.ServerLiveResponse(live=await self._gateway.server_live(context.time_remaining()))

    async def server_ready(self, request: Any, metadata: dict[str, str], key_id: str, context: Context) -> Message:
        return pb.ServerReadyResponse(ready=await self._gateway.server_ready(context.time_remaining()))

    async def model_ready(
        self, request: pb.ModelReadyRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        ready = await self._gateway.model_ready(request.name, request.version, context.time_remaining())
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: Any, metadata: dict[str, str], key_id: str, context: Context) -> Message:
        return await self._gateway.server_metadata(context.time_remaining())

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        return await self._gateway.model_metadata(request.name, request.version, context.time_remaining())

    async def model_config(
        self, request: pb.ModelConfigRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        return await self._gateway.model_config(request.name, request.version, context.time_remaining())

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        return await self._gateway.model_statistics(request.name, request.version, context.time_remaining())

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        return await self._gateway.repository_index(request.ready, context.time_remaining())

    async def repository_load(
        self, request: pb.RepositoryModelLoadRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        await self._gateway.repository_load(request.model_name, context.time_remaining())
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, metadata: dict[str, str], key_id: str, context: Context
    ) -> Message:
        await self._gateway.repository_unload(request.model_name, context.time_remaining())
        return pb.RepositoryModelUnloadResponse()

    def rpcs(self) -> dict[str, tuple[type[Message], str | None, Handler]]:
        """RPC → (request type, scope it needs: None = open, handler)."""
        return {
            "ModelInfer": (pb.ModelInferRequest, "predict", self.model_infer),
            "ServerLive": (pb.ServerLiveRequest, None, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, None, self.server_ready),
            "ModelReady": (pb.ModelReadyRequest, "predict", self.model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, "predict", self.server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, "predict", self.model_metadata),
            "ModelConfig": (pb.ModelConfigRequest, "predict", self.model_config),
            "ModelStatistics": (pb.ModelStatisticsRequest, "admin", self.model_statistics),
            "RepositoryIndex": (pb.RepositoryIndexRequest, "admin", self.repository_index),
            "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, "admin", self.repository_load),
            "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, "admin", self.repository_unload),
        }


def _parse(request_type: type[Message], raw: bytes) -> Any:
    message = request_type()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidInput(f"not a valid {request_type.DESCRIPTOR.full_name}: {exc}") from None
    return message


def _rpc(
    name: str,
    request_type: type[Message],
    scope: str | None,
    handler: Handler,
    guard: Guard,
    known: Callable[[str], bool],
) -> Callable[[bytes, Context], Awaitable[Message]]:
    """Admit, parse, call, inside the gRPC boundary; ModelInfer is also counted and timed."""

    @guarded_aio(ERRORS, name)
    async def call(raw: bytes, context: Context) -> Message:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        if name != "ModelInfer":
            key_id = await guard.admit_headers(metadata, scope) if scope else ""
            return await handler(_parse(request_type, raw), metadata, key_id, context)
        with observe("grpc_infer", "", "grpc", known) as observation:
            key_id = await guard.admit_headers(metadata, "predict")
            request = _parse(request_type, raw)
            observation.model = request.model_name
            answer = await handler(request, metadata, key_id, context)
            observation.version = answer.model_version  # type: ignore[attr-defined]
            return answer

    return call


def build_grpc_server(
    gateway: Gateway, guard: Guard, max_request_bytes: int, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    rpcs = GatewayServicer(gateway, max_request_bytes).rpcs()
    method_handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _rpc(name, request_type, scope, handler, guard, gateway.knows),
            request_deserializer=None,
            response_serializer=lambda m: m.SerializeToString(),
        )
        for name, (request_type, scope, handler) in rpcs.items()
    }
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * max_request_bytes + (1 << 20)),
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, method_handlers),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

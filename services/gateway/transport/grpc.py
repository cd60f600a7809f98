"""gRPC: `inference.GRPCInferenceService`, so tritonclient and perf_analyzer can point at the gateway.

Requests arrive as bytes and are parsed here, so a malformed protobuf is INVALID_ARGUMENT (the
stock deserializer would make it INTERNAL). Metadata: `authorization: Bearer <key>` or
`x-api-key`, `x-flywheel-sticky-key`; the call's own deadline is propagated. Messages over the
size limit are refused by gRPC itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.gateway.auth import Guard, presented_key
from services.gateway.dataplane import Gateway
from services.gateway.errors import GatewayError, InvalidInput
from services.gateway.transport.observe import observe
from services.gateway.transport.rest_infer import synthetic_from_header
from services.gateway.transport.status import retry_after_s, status_of
from services.genproto.inference import grpc_predict_v2_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
Handler = Callable[[Any, dict[str, str], grpc.aio.ServicerContext], Awaitable[Message]]

# RPC -> (request type, scope needed: None = open)
PASSTHROUGH: dict[str, tuple[type[Message], str | None]] = {
    "ServerLive": (pb.ServerLiveRequest, None),
    "ServerReady": (pb.ServerReadyRequest, None),
    "ModelReady": (pb.ModelReadyRequest, "predict"),
    "ServerMetadata": (pb.ServerMetadataRequest, "predict"),
    "ModelMetadata": (pb.ModelMetadataRequest, "predict"),
    "ModelConfig": (pb.ModelConfigRequest, "predict"),
    "ModelStatistics": (pb.ModelStatisticsRequest, "admin"),
    "RepositoryIndex": (pb.RepositoryIndexRequest, "admin"),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, "admin"),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, "admin"),
}


def _grpc_status(exc: GatewayError) -> str:
    return status_of(exc)[1].name


class GrpcProxy:
    def __init__(self, gateway: Gateway, guard: Guard) -> None:
        self._gw = gateway
        self._guard = guard

    async def _admit(self, md: dict[str, str], scope: str | None) -> str:
        if scope is None:
            return ""
        key = presented_key(md.get("authorization"), md.get("x-api-key"))
        return (await self._guard.admit(key, scope)).key_id

    async def model_infer(self, raw: bytes, md: dict[str, str], context: grpc.aio.ServicerContext) -> Message:
        request = _parse(pb.ModelInferRequest, raw)
        with observe("grpc_infer", request.model_name, _grpc_status, "OK") as ob:
            key_id = await self._admit(md, "predict")
            deadline = self._gw.deadline(context.time_remaining())
            answer = await self._gw.infer(
                request,
                key_id,
                deadline,
                md.get("x-flywheel-sticky-key"),
                synthetic=synthetic_from_header(md.get("x-flywheel-synthetic")),
            )
            ob.version = answer.response.model_version
            return answer.response

    def passthrough(self, method: str) -> Handler:
        request_type, scope = PASSTHROUGH[method]

        async def handler(raw: bytes, md: dict[str, str], context: grpc.aio.ServicerContext) -> Message:
            request = _parse(request_type, raw)
            await self._admit(md, scope)
            return await self._gw.backend.passthrough(method, request, self._gw.deadline(context.time_remaining()))

        return handler


def _parse(request_type: type[Message], raw: bytes) -> Any:
    message = request_type()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidInput(f"not a valid {request_type.DESCRIPTOR.full_name}: {exc}") from None
    return message


def _boundary(name: str, handler: Handler) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
    """The gRPC boundary: domain errors → status by the one table; anything else → INTERNAL, logged."""

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            return await handler(raw, md, context)
        except GatewayError as exc:
            _, code = status_of(exc)
            retry = retry_after_s(exc)
            if retry is not None:
                context.set_trailing_metadata((("retry-after-ms", str(max(1, math.ceil(retry * 1000)))),))
            await context.abort(code, exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error", extra={"rpc": name})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")

    return call


def build_grpc_server(
    gateway: Gateway, guard: Guard, max_request_bytes: int
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    proxy = GrpcProxy(gateway, guard)
    handlers: dict[str, Handler] = {"ModelInfer": proxy.model_infer}
    handlers.update({m: proxy.passthrough(m) for m in PASSTHROUGH})
    method_handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _boundary(name, h), request_deserializer=None, response_serializer=lambda m: m.SerializeToString()
        )
        for name, h in handlers.items()
    }
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * max_request_bytes + (1 << 20)),
        ]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, method_handlers),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

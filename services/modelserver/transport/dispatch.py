"""The one dispatch both gRPC fronts run: method path → caller check → parse → servicer → bytes.

The grpc.aio front hands it raw bytes through a generic handler; the compiled front
(transport/compiled.py) hands it the bytes its Rust thread collected. Either way the same code checks
the caller, parses the message (INVALID_ARGUMENT naming it when it does not parse), runs the same
guarded servicer method and serializes the answer, so the two fronts answer alike.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.transportkit.auth import HEALTH_METHODS, TrustedCallers
from services.transportkit.errors import NotAdmitted
from services.transportkit.grpc import parse_message

INFERENCE_SERVICE = "inference.GRPCInferenceService"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class Method:
    parse: Callable[[bytes], Any]
    run: Callable[[Any, Any], Awaitable[Any]]
    public: bool  # health: no credential needed


class Abort(grpc.aio.AbortError):
    """The compiled front's `context.abort`: the call ends with this status (and the trailers set)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class FrontContext:
    """What the servicer uses of a grpc.aio context, for calls of the compiled front."""

    __slots__ = ("_authorization", "_deadline", "expired", "trailers")

    def __init__(self, authorization: str | None, timeout_s: float | None) -> None:
        self._authorization = authorization
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.trailers: tuple[tuple[str, str], ...] = ()
        self.expired = False  # set when the front cancels the call at its deadline

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", self._authorization),) if self._authorization is not None else ()

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.trailers = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        if trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        raise Abort(code, details)


def _authorization(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


class Dispatch:
    """Method path → Method; `call` runs one unary call to its serialized answer (or aborts the context)."""

    def __init__(
        self, methods: Mapping[str, Method], callers: TrustedCallers, on_call: Callable[[], None] | None = None
    ) -> None:
        """`on_call`: called as each call starts, whatever it is (a drain counts it as activity)."""
        self._methods = dict(methods)
        self._callers = callers
        self._on_call = on_call

    def method(self, path: str) -> Method | None:
        return self._methods.get(path)

    def paths(self) -> list[str]:
        return list(self._methods)

    async def call(self, method: Method, raw: bytes, context: Any) -> bytes:
        if self._on_call is not None:
            self._on_call()
        if not method.public:
            try:
                self._callers.identify(_authorization(context.invocation_metadata()))
            except NotAdmitted as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        request, problem = parse_message(method.parse, raw)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        response = await method.run(request, context)
        return response.SerializeToString()


def model_server_dispatch(
    servicer: Any,
    health_servicer: health.aio.HealthServicer,
    callers: TrustedCallers,
    on_call: Callable[[], None] | None = None,
) -> Dispatch:
    """Every method of inference.GRPCInferenceService on `servicer`, and health's Check (public)."""
    service = pb.DESCRIPTOR.services_by_name[INFERENCE_SERVICE.rpartition(".")[2]]
    methods = {
        f"/{INFERENCE_SERVICE}/{m.name}": Method(
            getattr(pb, m.input_type.name).FromString, getattr(servicer, m.name), public=False
        )
        for m in service.methods
    }
    methods[HEALTH_CHECK] = Method(
        health_pb2.HealthCheckRequest.FromString, health_servicer.Check, public=HEALTH_CHECK in HEALTH_METHODS
    )
    return Dispatch(methods, callers, on_call)


class AioDispatch(grpc.GenericRpcHandler):
    """The grpc.aio front's handler: every method of `dispatch`, raw bytes in and out."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._handlers = {path: self._handler(dispatch, dispatch.method(path)) for path in dispatch.paths()}  # type: ignore[arg-type]

    @staticmethod
    def _handler(dispatch: Dispatch, method: Method) -> grpc.RpcMethodHandler:
        async def behavior(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await dispatch.call(method, raw, context)

        return grpc.unary_unary_rpc_method_handler(behavior)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

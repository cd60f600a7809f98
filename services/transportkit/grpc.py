"""The gRPC boundary of every service: domain errors → status by the service's table, anything else →
INTERNAL with its traceback logged. One decorator for grpc.aio handlers, one for thread-pool servers
(unary methods and server-streaming generators alike). The handler's last argument is its context.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from services.transportkit.errors import ErrorTable

log = logging.getLogger(__name__)

R = TypeVar("R")


def _refusal(table: ErrorTable, exc: Exception, rpc: str) -> tuple[grpc.StatusCode, str]:
    code = table.status(exc).grpc
    if table.log_refusals:
        log.info("request refused", extra={"rpc": rpc, "code": code.name, "reason": str(exc)})
    return code, str(exc)


def guarded_aio(
    table: ErrorTable, rpc: str = ""
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """For `async def handler(..., context)` on a grpc.aio server."""

    def decorate(handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        name = rpc or handler.__name__

        @functools.wraps(handler)
        async def call(*args: Any) -> R:
            context: grpc.aio.ServicerContext = args[-1]
            try:
                return await handler(*args)
            except table.handled as exc:
                trailers = table.grpc_trailers(exc)
                if trailers:
                    context.set_trailing_metadata(trailers)
                await context.abort(*_refusal(table, exc, name))
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error", extra={"rpc": name})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise AssertionError("unreachable: abort raises")

        return call

    return decorate


def _abort(context: grpc.ServicerContext, table: ErrorTable, exc: Exception, rpc: str) -> None:
    trailers = table.grpc_trailers(exc)
    if trailers:
        context.set_trailing_metadata(trailers)
    context.abort(*_refusal(table, exc, rpc))


def guarded(table: ErrorTable) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """For `def handler(self, request, context)` on a thread-pool server; generators (streams) too."""

    def decorate(handler: Callable[..., R]) -> Callable[..., R]:
        name = handler.__name__

        def fail(context: grpc.ServicerContext, exc: Exception) -> None:
            if isinstance(exc, table.handled):
                _abort(context, table, exc, name)
            log.error("unhandled error", exc_info=exc, extra={"rpc": name})
            context.abort(grpc.StatusCode.INTERNAL, "internal error")

        if inspect.isgeneratorfunction(handler):

            @functools.wraps(handler)
            def stream(*args: Any) -> Iterator[Any]:
                try:
                    yield from handler(*args)
                except Exception as exc:
                    if _aborted(exc):
                        raise
                    fail(args[-1], exc)

            return stream  # type: ignore[return-value]

        @functools.wraps(handler)
        def unary(*args: Any) -> R:
            try:
                return handler(*args)
            except Exception as exc:
                if _aborted(exc):
                    raise
                fail(args[-1], exc)
                raise AssertionError("unreachable: abort raises") from None

        return unary

    return decorate


def _aborted(exc: Exception) -> bool:
    """`context.abort()` on a thread-pool server raises a bare Exception carrying no status of ours."""
    return type(exc) is Exception and not exc.args


# -- parsing ------------------------------------------------------------------------------------------
# What the stock deserializer does with bytes that are not the request message: the thread-pool server
# answers INTERNAL and grpc.aio UNKNOWN, as if the server had failed. Parsed here instead, they are
# the caller's INVALID_ARGUMENT, naming the message.
def _parser(handler: grpc.RpcMethodHandler) -> Callable[[bytes], Any] | None:
    return handler.request_deserializer


def parse_message(deserialize: Callable[[bytes], Any], raw: bytes) -> tuple[Any, str]:
    try:
        return deserialize(raw), ""
    except (DecodeError, ValueError) as exc:
        name = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
        what = name.full_name if name is not None else "request message"
        return None, f"not a valid {what}: {exc}"


def same_kind(handler: grpc.RpcMethodHandler) -> Callable[..., grpc.RpcMethodHandler]:
    """The constructor of a method handler with the same streaming shape as `handler`."""
    return {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream  # type: ignore[return-value]
    )


class StrictParsing(grpc.ServerInterceptor):
    """Thread-pool servers: a request that does not parse is INVALID_ARGUMENT (streams: at that message)."""

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        deserialize = _parser(handler) if handler is not None else None
        if handler is None or deserialize is None:
            return handler
        inner = _behavior(handler)

        def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
            request, problem = parse_message(deserialize, raw)
            if problem:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return request

        if handler.request_streaming:

            def behavior(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                return inner((parsed(raw, context) for raw in requests), context)

        else:

            def behavior(raw: bytes, context: grpc.ServicerContext) -> Any:  # type: ignore[misc]
                return inner(parsed(raw, context), context)

        return same_kind(handler)(behavior, request_deserializer=None, response_serializer=handler.response_serializer)


class AioStrictParsing(grpc.aio.ServerInterceptor):
    """The same for grpc.aio servers' unary-unary methods (every one they serve here but health's Watch)."""

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        deserialize = _parser(handler) if handler is not None else None
        if handler is None or deserialize is None or handler.request_streaming or handler.response_streaming:
            return handler
        inner = _behavior(handler)

        async def behavior(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            request, problem = parse_message(deserialize, raw)
            if problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return await inner(request, context)

        return same_kind(handler)(behavior, request_deserializer=None, response_serializer=handler.response_serializer)

"""Draining an HTTP server on SIGTERM without failing a request that reached it.

What uvicorn does alone on `should_exit`: it closes the listener and every idle keep-alive
connection at once. A client (the gateway's pool) that just wrote a request on such a
connection sees it closed with no answer, and a server that answers 503 while stopping trips
the caller's circuit breaker. So a service drains in three steps instead:

1. `Drain.start()`: readiness goes 503 (the caller's job) while requests go on being served
   normally, on the connections they came on and on new ones; every request from then on is
   answered with `Connection: close`, so each client drops its connection after the answer it got
   rather than find it gone under its next request.
2. `Drain.settle()` waits until no HTTP request is in flight and none, nor any gRPC call
   (`GrpcActivity`), arrived for `quiet_s` (the clients have gone elsewhere), or the drain time
   is spent.
3. uvicorn stops with what is left of the drain time for the requests still in flight.

`drain_http` runs steps 1-3 for a server made by `bootstrap.uvicorn_server`; a gRPC server beside it
serves through steps 1-2 and then stops gracefully (`server.stop(remaining(until))`) within the same bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvicorn

from services.transportkit.rest import ASGIApp, Receive, Scope, Send

# With no request in flight and none for this long, the remaining (idle) connections are closed.
# Long enough for a caller that still lists this address to finish its burst; short next to a drain time.
QUIET_S = 1.0
_POLL_S = 0.05


class Drain:
    """ASGI middleware: counts requests in flight and, once started, answers each with `Connection: close`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False
        self.in_flight = 0
        self.last_request = time.monotonic()

    def start(self) -> None:
        self.draining = True

    def note_request(self) -> None:
        """A request that did not come through this app (a gRPC call) counts as activity too."""
        self.last_request = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        self.last_request = time.monotonic()
        try:
            if not self.draining:
                # The hot path stays bare: a response begun before the drain may keep its connection,
                # whose next request is then answered with `Connection: close`.
                await self.app(scope, receive, send)
                return

            async def closing(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
                await send(message)

            await self.app(scope, receive, closing)
        finally:
            self.in_flight -= 1

    def quiet(self, quiet_s: float) -> bool:
        return self.in_flight == 0 and time.monotonic() - self.last_request >= quiet_s

    async def settle(self, until: float, quiet_s: float = QUIET_S) -> None:
        """Wait (monotonic deadline `until`) for quiet. Not for the connections to close: a client may
        keep one open, idle, for as long as it likes, and gRPC calls come on none of them."""
        while time.monotonic() < until and not self.quiet(quiet_s):
            await asyncio.sleep(_POLL_S)


class GrpcActivity(grpc.aio.ServerInterceptor):
    """A grpc.aio server's calls count as activity for `drain` (the gRPC server stops after the quiet)."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self._drain.note_request()
        return await continuation(details)


async def drain_http(server: uvicorn.Server, drain: Drain, until: float, quiet_s: float = QUIET_S) -> None:
    """Steps 1-3 for `server` (serving `drain`'s app) within the monotonic deadline `until`; then await the
    server's task for its end (the caller stops its gRPC server beside it with `remaining(until)`)."""
    drain.start()
    await drain.settle(until, quiet_s)
    # What is left of the drain time bounds the requests still running; uvicorn cancels them after it.
    server.config.timeout_graceful_shutdown = max(remaining(until), 0.1)
    server.should_exit = True


def remaining(until: float) -> float:
    """Seconds left before the monotonic deadline `until` (never below zero)."""
    return max(until - time.monotonic(), 0.0)

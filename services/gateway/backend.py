"""The model server over pooled gRPC channels: deadlines propagated, safe retries, a breaker per backend.

Carries the metadata, readiness, repository, config and statistics RPCs; inference goes over
rest_backend.py (measured cheaper per request).

Retried, inside the remaining budget only: UNAVAILABLE (not reached, or the model not ready) and
RESOURCE_EXHAUSTED (its queue is full: the request was not run). Never retried: a deadline that
passed, a runtime failure, a bad request. Transport-level failures (UNAVAILABLE, DEADLINE_EXCEEDED)
count against the backend's circuit breaker; a model that answered, even with an error, did not.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.gateway.breaker import Breakers
from services.gateway.deadline import Deadline
from services.gateway.errors import (
    BackendFailed,
    BackendOverloaded,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
)
from services.gateway.metrics import RETRIES
from services.genproto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
BREAKING = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MIN_ATTEMPT_S = 0.002


def gateway_error(exc: grpc.aio.AioRpcError, backend: str) -> GatewayError:
    code, detail = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendOverloaded(f"model server overloaded: {detail}", _retry_after(exc))
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"model server {backend} unavailable: {detail}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"deadline exceeded at the model server: {detail}")
    return BackendFailed(f"model server failed ({code.name}): {detail}")


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return float(value) / 1000
            except ValueError:
                return None
    return None


class ModelServerClient:
    def __init__(
        self,
        addr: str,
        pool_size: int,
        breakers: Breakers,
        retries: int,
        backoff_s: float,
        max_message_bytes: int,
    ) -> None:
        self.addr = addr
        limit = 4 * max_message_bytes + (1 << 20)
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Separate TCP connections per channel, so the pool spreads load.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", 30000),
        ]
        self._channels = [grpc.aio.insecure_channel(addr, options=options) for _ in range(pool_size)]
        self._stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        self._next = itertools.cycle(range(pool_size))
        self._breakers = breakers
        self._retries = retries
        self._backoff_s = backoff_s

    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        return self._stubs[next(self._next)]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def call(
        self,
        backend: str,
        rpc: Callable[[pb_grpc.GRPCInferenceServiceStub, float], Awaitable[T]],
        deadline: Deadline,
    ) -> T:
        """One RPC with the remaining budget as its timeout, retried only when safe and in budget."""
        breaker = self._breakers.get(backend)
        attempt = 0
        while True:
            left = deadline.check()
            breaker.before()
            try:
                result = await rpc(self.stub(), left)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in BREAKING:
                    breaker.failure()
                else:
                    breaker.success()  # it answered: the backend is up
                error = gateway_error(exc, self.addr)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED or deadline.remaining() <= 0:
                    raise DeadlineExceeded(f"no answer from {backend} within the deadline") from None
                if code not in RETRYABLE or attempt >= self._retries:
                    raise error from None
                wait = self._backoff_s * (2**attempt)
                hinted = getattr(error, "retry_after_s", None)
                if hinted:
                    wait = max(wait, hinted)
                if deadline.remaining() < wait + MIN_ATTEMPT_S:
                    raise error from None
                attempt += 1
                RETRIES.labels(self.addr).inc()
                await asyncio.sleep(wait)
                continue
            breaker.success()
            return result

    async def passthrough(self, method: str, request: Any, deadline: Deadline) -> Any:
        """Metadata, readiness, repository, config and statistics RPCs, forwarded as they are."""
        return await self.call(f"{self.addr}/{method}", lambda s, t: getattr(s, method)(request, timeout=t), deadline)

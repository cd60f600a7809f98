"""A service's one error table: domain error → HTTP status and gRPC code, retry headers, error body.

Each service declares its table in `transport/status.py` from its own error classes; both of its
boundaries (REST and gRPC) read it, so the two cannot drift. A class is looked up along its MRO,
so a subclass inherits its parent's status unless it has a row of its own; an error the table does
not know is no domain error and ends at the boundary as 500 / INTERNAL, logged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Status:
    http: int
    grpc: grpc.StatusCode


# The pairs most tables use; a service may pair other codes where its meaning differs.
BAD_REQUEST = Status(400, grpc.StatusCode.INVALID_ARGUMENT)
UNAUTHENTICATED = Status(401, grpc.StatusCode.UNAUTHENTICATED)
FORBIDDEN = Status(403, grpc.StatusCode.PERMISSION_DENIED)
NOT_FOUND = Status(404, grpc.StatusCode.NOT_FOUND)
CONFLICT = Status(409, grpc.StatusCode.FAILED_PRECONDITION)
UNPROCESSABLE = Status(422, grpc.StatusCode.FAILED_PRECONDITION)
TOO_MANY_REQUESTS = Status(429, grpc.StatusCode.RESOURCE_EXHAUSTED)
INTERNAL = Status(500, grpc.StatusCode.INTERNAL)
UNAVAILABLE = Status(503, grpc.StatusCode.UNAVAILABLE)
TIMEOUT = Status(504, grpc.StatusCode.DEADLINE_EXCEEDED)


class BodyTooLarge(Exception):
    """The body is over the limit: by its Content-Length, or as it streams in."""

    def __init__(self, size: int, limit: int, declared: bool) -> None:
        super().__init__(
            f"request body is {size} bytes, over the limit of {limit} bytes"
            if declared
            else f"request body is over the limit of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class NotJson(ValueError):
    """A body that should be JSON is not."""


class NotAdmitted(Exception):
    """The caller presented no credential this service accepts for an internal route (see auth.py)."""


# What the kit itself raises, so every table reports it alike unless a service maps it otherwise.
KIT_STATUSES: dict[type[Exception], Status] = {
    BodyTooLarge: Status(413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    NotJson: BAD_REQUEST,
    NotAdmitted: UNAUTHENTICATED,
}


def message_body(exc: Exception) -> dict[str, object]:
    """`{"error": message}`: the v2 protocol's error body (KServe, Triton)."""
    return {"error": str(exc)}


def named_body(exc: Exception) -> dict[str, object]:
    """`{"error": ErrorClass, "detail": message}`: for callers that branch on the kind of error."""
    return {"error": type(exc).__name__, "detail": str(exc)}


def retry_after_s(exc: Exception) -> float | None:
    """How long the caller should wait before retrying (`retry_after_s` of overload errors), or None."""
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class ErrorTable:
    def __init__(
        self,
        statuses: Mapping[type[Exception], Status],
        body: Callable[[Exception], dict[str, object]] = message_body,
        headers: Mapping[type[Exception], Mapping[str, str]] | None = None,
        log_refusals: bool = False,
    ) -> None:
        """`statuses`: a row per error class (a service's base class included, for its unmapped ones); the
        kit's own errors (KIT_STATUSES) are in every table unless a row says otherwise;
        `body`: the JSON error body; `headers`: extra response headers by class (e.g. a 401's challenge);
        `log_refusals`: log each refused request at INFO (services whose refusals are rare and telling)."""
        self._statuses = {**KIT_STATUSES, **statuses}
        self._headers = {NotAdmitted: {"WWW-Authenticate": "Bearer"}, **(headers or {})}
        self.body = body
        self.handled: tuple[type[Exception], ...] = tuple(self._statuses)
        self.log_refusals = log_refusals

    def status(self, exc: Exception) -> Status:
        for cls in type(exc).__mro__:
            found = self._statuses.get(cls)
            if found is not None:
                return found
        return INTERNAL

    def http_headers(self, exc: Exception) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        retry = retry_after_s(exc)
        if retry is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry)))
            headers["Retry-After-Ms"] = str(max(1, math.ceil(retry * 1000)))
        for cls in type(exc).__mro__:
            headers.update(self._headers.get(cls, {}))
        return headers

    def http(self, exc: Exception) -> tuple[int, dict[str, str], bytes]:
        """(HTTP status, headers, JSON body) of a domain error."""
        return self.status(exc).http, self.http_headers(exc), json.dumps(self.body(exc)).encode()

    def grpc_trailers(self, exc: Exception) -> tuple[tuple[str, str], ...]:
        retry = retry_after_s(exc)
        return (("retry-after-ms", str(max(1, math.ceil(retry * 1000)))),) if retry is not None else ()

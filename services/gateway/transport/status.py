"""The one table from gateway errors to HTTP and gRPC statuses, read by both adapters."""

from __future__ import annotations

import grpc

from services.gateway.errors import (
    BackendFailed,
    BackendOverloaded,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    RequestTooLarge,
    Unauthenticated,
)

STATUS: dict[type[GatewayError], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    PermissionDenied: (403, grpc.StatusCode.PERMISSION_DENIED),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    RequestTooLarge: (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    RateLimited: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    BackendOverloaded: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    BackendFailed: (502, grpc.StatusCode.INTERNAL),
    BackendUnavailable: (503, grpc.StatusCode.UNAVAILABLE),
    DeadlineExceeded: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
}


def status_of(exc: GatewayError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, grpc.StatusCode.INTERNAL


def retry_after_s(exc: GatewayError) -> float | None:
    return getattr(exc, "retry_after_s", None)

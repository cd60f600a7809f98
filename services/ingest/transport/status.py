"""The one table from ingest's errors to HTTP and gRPC statuses (REST and gRPC both read it)."""

from __future__ import annotations

import grpc

from services.ingest.errors import (
    IngestError,
    InvalidInput,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnknownAnnotation,
)

STATUS: dict[type[IngestError], tuple[int, grpc.StatusCode]] = {
    UnknownAnnotation: (404, grpc.StatusCode.NOT_FOUND),
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    PayloadTooLarge: (413, grpc.StatusCode.INVALID_ARGUMENT),
    Unauthorized: (401, grpc.StatusCode.UNAUTHENTICATED),
    Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
}


def status_of(exc: IngestError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500, grpc.StatusCode.INTERNAL


def body_of(exc: IngestError) -> dict[str, str]:
    return {
        "error": type(exc).__name__,
        "field": getattr(exc, "field", ""),
        "reason": getattr(exc, "reason", str(exc)),
    }

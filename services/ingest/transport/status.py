"""Ingest's one error table, read by its REST and gRPC boundaries; refusals are logged."""

from __future__ import annotations

import grpc

from services.ingest.errors import (
    IngestError,
    InvalidInput,
    PayloadTooLarge,
    StreamCancelled,
    StreamTooLarge,
    Unauthorized,
    Unavailable,
    UnknownAnnotation,
)
from services.transportkit.errors import (
    BAD_REQUEST,
    INTERNAL,
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    UNAUTHENTICATED,
    UNAVAILABLE,
    ErrorTable,
    Status,
)


def _body(exc: Exception) -> dict[str, object]:
    return {
        "error": type(exc).__name__,
        "field": getattr(exc, "field", ""),
        "reason": getattr(exc, "reason", str(exc)),
    }


ERRORS = ErrorTable(
    {
        IngestError: INTERNAL,
        UnknownAnnotation: NOT_FOUND,
        InvalidInput: BAD_REQUEST,
        PayloadTooLarge: Status(413, grpc.StatusCode.INVALID_ARGUMENT),
        StreamTooLarge: TOO_MANY_REQUESTS,
        StreamCancelled: Status(499, grpc.StatusCode.CANCELLED),
        Unauthorized: UNAUTHENTICATED,
        Unavailable: UNAVAILABLE,
    },
    body=_body,
    log_refusals=True,
)

"""The one table from domain errors to HTTP and gRPC statuses, read by both adapters."""

from __future__ import annotations

import grpc

from services.modelserver.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    InvalidModelConfig,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ModelServerError,
    Overloaded,
    ShuttingDown,
)

STATUS: dict[type[ModelServerError], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    InvalidModelConfig: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ModelLoadFailed: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    Overloaded: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    InferenceFailed: (500, grpc.StatusCode.INTERNAL),
    ModelNotReady: (503, grpc.StatusCode.UNAVAILABLE),
    ShuttingDown: (503, grpc.StatusCode.UNAVAILABLE),
    DeadlineExceeded: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
}


def status_of(exc: ModelServerError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, grpc.StatusCode.INTERNAL


def retry_after_s(exc: ModelServerError) -> float | None:
    return exc.retry_after_s if isinstance(exc, Overloaded) else None

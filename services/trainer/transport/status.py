"""The one table from domain errors to HTTP and gRPC statuses (REST and gRPC both read it)."""

from __future__ import annotations

import grpc

from services.trainer.errors import (
    InvalidRequest,
    JobConflict,
    JobNotFound,
    LakeUnavailable,
    ModelNotFound,
    ProjectConflict,
    ProjectNotFound,
    PromotionRefused,
    PublishFailed,
    RunnerFailed,
    SnapshotInvalid,
    SnapshotNotFound,
    TrainerError,
)

STATUS: dict[type[TrainerError], tuple[int, grpc.StatusCode]] = {
    InvalidRequest: (400, grpc.StatusCode.INVALID_ARGUMENT),
    SnapshotInvalid: (422, grpc.StatusCode.FAILED_PRECONDITION),
    JobNotFound: (404, grpc.StatusCode.NOT_FOUND),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    SnapshotNotFound: (404, grpc.StatusCode.NOT_FOUND),
    ProjectNotFound: (404, grpc.StatusCode.NOT_FOUND),
    ProjectConflict: (409, grpc.StatusCode.FAILED_PRECONDITION),
    PublishFailed: (503, grpc.StatusCode.UNAVAILABLE),
    JobConflict: (409, grpc.StatusCode.FAILED_PRECONDITION),
    PromotionRefused: (409, grpc.StatusCode.FAILED_PRECONDITION),
    LakeUnavailable: (503, grpc.StatusCode.UNAVAILABLE),
    RunnerFailed: (502, grpc.StatusCode.UNAVAILABLE),
}


def status_of(exc: TrainerError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500, grpc.StatusCode.INTERNAL

"""The one table from the lake's domain errors to HTTP and gRPC statuses."""

from __future__ import annotations

import grpc

from services.lake.errors import EmptySnapshot, InvalidRequest, LakeError, LakeUnavailable, SnapshotNotFound

STATUS: dict[type[LakeError], tuple[int, grpc.StatusCode]] = {
    InvalidRequest: (400, grpc.StatusCode.INVALID_ARGUMENT),
    SnapshotNotFound: (404, grpc.StatusCode.NOT_FOUND),
    EmptySnapshot: (422, grpc.StatusCode.FAILED_PRECONDITION),
    LakeUnavailable: (503, grpc.StatusCode.UNAVAILABLE),
}


def status_of(exc: LakeError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500, grpc.StatusCode.INTERNAL

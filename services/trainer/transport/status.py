"""The trainer's one error table, read by its REST and gRPC boundaries."""

from __future__ import annotations

import grpc

from services.trainer.errors import (
    InvalidRequest,
    JobConflict,
    JobLogUnavailable,
    JobNotFound,
    JobSpecInvalid,
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
from services.transportkit.errors import (
    BAD_REQUEST,
    CONFLICT,
    INTERNAL,
    NOT_FOUND,
    UNAVAILABLE,
    UNPROCESSABLE,
    ErrorTable,
    Status,
    named_body,
)

ERRORS = ErrorTable(
    {
        TrainerError: INTERNAL,
        InvalidRequest: BAD_REQUEST,
        SnapshotInvalid: UNPROCESSABLE,
        JobSpecInvalid: UNPROCESSABLE,
        JobNotFound: NOT_FOUND,
        ModelNotFound: NOT_FOUND,
        SnapshotNotFound: NOT_FOUND,
        ProjectNotFound: NOT_FOUND,
        ProjectConflict: CONFLICT,
        PublishFailed: UNAVAILABLE,
        JobConflict: CONFLICT,
        JobLogUnavailable: CONFLICT,
        PromotionRefused: CONFLICT,
        LakeUnavailable: UNAVAILABLE,
        RunnerFailed: Status(502, grpc.StatusCode.UNAVAILABLE),
    },
    body=named_body,
)

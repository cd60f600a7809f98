"""The lake's one error table, read by its REST and gRPC boundaries."""

from __future__ import annotations

from services.lake.errors import EmptySnapshot, InvalidRequest, LakeError, LakeUnavailable, SnapshotNotFound
from services.transportkit.errors import (
    BAD_REQUEST,
    INTERNAL,
    NOT_FOUND,
    UNAVAILABLE,
    UNPROCESSABLE,
    ErrorTable,
    named_body,
)

ERRORS = ErrorTable(
    {
        LakeError: INTERNAL,
        InvalidRequest: BAD_REQUEST,
        SnapshotNotFound: NOT_FOUND,
        EmptySnapshot: UNPROCESSABLE,
        LakeUnavailable: UNAVAILABLE,
    },
    body=named_body,
)

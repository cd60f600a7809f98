"""The gateway's one error table, read by its REST and gRPC boundaries and by its request metrics."""

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
from services.oip.errors import ProtocolError
from services.transportkit.errors import (
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL,
    NOT_FOUND,
    TIMEOUT,
    TOO_MANY_REQUESTS,
    UNAUTHENTICATED,
    UNAVAILABLE,
    ErrorTable,
    Status,
)
from services.transportkit.rest import BodyTooLarge, NotJson

TOO_LARGE = Status(413, grpc.StatusCode.RESOURCE_EXHAUSTED)

ERRORS = ErrorTable(
    {
        GatewayError: INTERNAL,
        ProtocolError: BAD_REQUEST,
        NotJson: BAD_REQUEST,
        InvalidInput: BAD_REQUEST,
        Unauthenticated: UNAUTHENTICATED,
        PermissionDenied: FORBIDDEN,
        ModelNotFound: NOT_FOUND,
        RequestTooLarge: TOO_LARGE,
        BodyTooLarge: TOO_LARGE,
        RateLimited: TOO_MANY_REQUESTS,
        BackendOverloaded: TOO_MANY_REQUESTS,
        BackendFailed: Status(502, grpc.StatusCode.INTERNAL),
        BackendUnavailable: UNAVAILABLE,
        DeadlineExceeded: TIMEOUT,
    },
    headers={Unauthenticated: {"WWW-Authenticate": "Bearer"}},
)

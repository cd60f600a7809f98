"""The model server's one error table, read by its REST and gRPC boundaries."""

from __future__ import annotations

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
from services.oip.errors import ProtocolError
from services.transportkit.errors import (
    BAD_REQUEST,
    INTERNAL,
    NOT_FOUND,
    TIMEOUT,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    ErrorTable,
)
from services.transportkit.rest import BodyTooLarge, NotJson

ERRORS = ErrorTable(
    {
        ModelServerError: INTERNAL,
        InferenceFailed: INTERNAL,
        ProtocolError: BAD_REQUEST,
        BodyTooLarge: BAD_REQUEST,
        NotJson: BAD_REQUEST,
        InvalidInput: BAD_REQUEST,
        InvalidModelConfig: BAD_REQUEST,
        ModelLoadFailed: BAD_REQUEST,
        ModelNotFound: NOT_FOUND,
        Overloaded: TOO_MANY_REQUESTS,
        ModelNotReady: UNAVAILABLE,
        ShuttingDown: UNAVAILABLE,
        DeadlineExceeded: TIMEOUT,
    }
)

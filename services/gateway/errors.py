"""The gateway's domain errors. They say what happened; transport/status.py says how it is reported."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(GatewayError):
    """No API key, an unknown or wrong one, or a revoked one."""


class PermissionDenied(GatewayError):
    """The key is valid but lacks the scope this call needs."""


class RateLimited(GatewayError):
    """The key's token bucket is empty; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLarge(GatewayError):
    """The body or message is over the configured limit."""


class InvalidInput(GatewayError):
    """The request is malformed or does not fit the model."""


class ModelNotFound(GatewayError):
    """No such model or version (here or at the model server)."""


class BackendOverloaded(GatewayError):
    """The model server refused for load and retrying did not fit in the deadline."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(GatewayError):
    """The model server cannot be reached, or the model is not ready there."""


class CircuitOpen(BackendUnavailable):
    """The backend failed repeatedly; the gateway refuses calls to it for a while."""


class DeadlineExceeded(GatewayError):
    """The request's deadline passed before an answer came back. `backend_fault`: False when the
    caller's own budget was too short to say anything about the backend (see deadline.py)."""

    def __init__(self, message: str, backend_fault: bool = True) -> None:
        super().__init__(message)
        self.backend_fault = backend_fault


class BackendFailed(GatewayError):
    """The model server failed on this request (e.g. the runtime raised)."""

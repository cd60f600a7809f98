"""The model server's domain errors. They say what happened; transport/status.py says how it is reported."""

from __future__ import annotations


class ModelServerError(Exception):
    """Base of every error the model server reports to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(ModelServerError):
    """No such model, or no such version loaded."""


class ModelNotReady(ModelServerError):
    """The model exists but is loading, draining or failed to load."""


class InvalidInput(ModelServerError):
    """The request does not match the model's inputs (name, datatype, shape, size)."""


class InvalidModelConfig(ModelServerError):
    """A `config.pbtxt` or a version folder in the repository cannot be used."""


class ModelLoadFailed(ModelServerError):
    """The runtime could not load or warm up a model version."""


class RuntimeUnavailable(ModelLoadFailed):
    """The model needs a runtime this server does not have (TorchScript where torch is not installed)."""


class Overloaded(ModelServerError):
    """The model's queue is full; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ModelServerError):
    """The request's deadline passed before it could be computed."""


class InferenceFailed(ModelServerError):
    """The backend failed on this request (other requests of its batch are unaffected)."""


class ShuttingDown(ModelServerError):
    """The server is draining and takes no new work."""

"""The one error the protocol's codecs raise. Each service's status table reports it (400 / INVALID_ARGUMENT)."""

from __future__ import annotations


class ProtocolError(Exception):
    """A request or answer that does not follow the Open Inference Protocol: bad JSON, datatype, shape or size."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

"""Ingest's domain errors. They say what happened; transport/status.py says how it is reported."""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error ingest reports to a caller."""


class InvalidInput(IngestError):
    """A label (or the request carrying it) is not acceptable: `field` names where, `reason` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownAnnotation(InvalidInput):
    """A delete names an annotation ingest never stored."""


class StreamTooLarge(InvalidInput):
    """A gRPC label stream carries more labels or bytes than one stream may."""


class StreamCancelled(IngestError):
    """A gRPC label stream ended before its last label: silent too long or open too long (ingest cancelled
    it), or cancelled by its caller. Nothing of it is stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.field = ""
        self.reason = reason


class PayloadTooLarge(IngestError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body is {size} bytes; the limit is {limit} (FLYWHEEL_INGEST_MAX_BODY_BYTES)")
        self.field = "body"
        self.reason = str(self)


class Unauthorized(IngestError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.field = "authorization"
        self.reason = reason


class Unavailable(IngestError):
    """Our own dependency (broker, database, object store) failed; the caller may retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.field = ""
        self.reason = reason

"""The lake's domain errors; transport/status.py maps them to HTTP and gRPC statuses."""

from __future__ import annotations


class LakeError(Exception):
    """Base of the lake's errors."""


class InvalidRequest(LakeError):
    """A request's argument is wrong; the message names the field and the reason."""


class SnapshotNotFound(LakeError):
    """No snapshot has this id."""


class EmptySnapshot(LakeError):
    """The filters select no labelled example, so there is nothing to snapshot."""


class LakeUnavailable(LakeError):
    """The lake's storage cannot be read or written right now."""

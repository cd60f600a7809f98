"""Encode and decode events; a payload that is not a valid event raises InvalidEvent only."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.events.topics import topic
from services.genproto.flywheel.v1 import events_pb2 as ev

SCHEMA_VERSION = 1
# The range protobuf defines for a Timestamp (0001-01-01 to 9999-12-31 UTC): outside it, converting
# one to a datetime raises, so an event carrying such a time is invalid, not a consumer's crash.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


class InvalidEvent(ValueError):
    """The bytes are not an acceptable event for their topic; the message says why."""


Validator = Callable[[Message], None]


def new_meta(source: str, event_id: str = "", trace_id: str = "") -> ev.EventMeta:
    """An envelope; pass a deterministic event_id when the fact has a natural identity."""
    now = Timestamp()
    now.GetCurrentTime()
    return ev.EventMeta(
        event_id=event_id or uuid.uuid4().hex,
        time=now,
        source=source,
        trace_id=trace_id,
        schema_version=SCHEMA_VERSION,
    )


def deterministic_id(*parts: object) -> str:
    """A stable event id from the parts that identify a fact (a replay yields the same id)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "|".join(str(p) for p in parts)).hex


def encode(event: Message) -> bytes:
    return event.SerializeToString(deterministic=True)


def decode(topic_name: str, payload: bytes | None, validate: Validator | None = None) -> Message:
    """Parse a topic's payload and check the envelope; raise InvalidEvent with the reason."""
    if payload is None:
        raise InvalidEvent("empty payload (tombstone) where an event was expected")
    message = topic(topic_name).message()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise InvalidEvent(f"not a {message.DESCRIPTOR.full_name} protobuf: {exc}") from None
    meta = getattr(message, "meta", None)
    if meta is None or not meta.event_id:
        raise InvalidEvent(f"{message.DESCRIPTOR.full_name} without meta.event_id")
    if meta.schema_version > SCHEMA_VERSION:
        raise InvalidEvent(f"schema_version {meta.schema_version} is newer than this consumer ({SCHEMA_VERSION})")
    check_times(message)
    if validate is not None:
        validate(message)
    return message


def check_times(message: Message, where: str = "") -> None:
    """InvalidEvent when a Timestamp anywhere in the message is outside protobuf's valid range."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE or field.is_repeated:
            continue
        name = f"{where}{field.name}"
        if field.message_type.full_name == "google.protobuf.Timestamp":
            if not (MIN_SECONDS <= value.seconds <= MAX_SECONDS and 0 <= value.nanos < 1_000_000_000):
                raise InvalidEvent(
                    f"{name} ({value.seconds} s, {value.nanos} ns) is outside 0001-01-01..9999-12-31 UTC"
                )
        else:
            check_times(value, f"{name}.")


def key_of(topic_name: str, event: Message) -> bytes:
    value = getattr(event, topic(topic_name).key)
    return str(value).encode()

"""What preprocessing refuses: `InvalidField` names the field of the input and the reason.

Each service maps it to its own error (ingest → 400 naming `labels[3].row.age`, the gateway → 400
naming `instances[0].age`) by prefixing where the input sat in its request.
"""

from __future__ import annotations


class InvalidField(ValueError):
    """An input (or one field of it) is not acceptable; `field` is relative to the input ("" = itself)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def at(self, prefix: str) -> str:
        """The field's full path under `prefix` ("labels[3].row" + "age" → "labels[3].row.age")."""
        if not self.field:
            return prefix
        return f"{prefix}.{self.field}" if prefix else self.field


class InvalidImage(InvalidField):
    """The bytes are not an image this project accepts; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__("", reason)

"""A tabular row (a JSON object) → checked field by field → the codes every service uses.

The codes are one float32 per column, in the spec's column order: the number itself for `float`
and `int` columns, the value's index in the spec's list for `category` columns, NaN for a null.
They are what events, the lake and snapshots carry, what the monitor tests per column, and what
the tabular models take: the encoders fitted at training time (imputation, standardisation, the
category → embedding-row table) live inside the exported model, so a caller never needs them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from services.preprocessing.errors import InvalidField
from services.projects.spec import Column, TabularInput

# Above 2**24 a float32 no longer holds every integer: an int column refuses what it cannot keep exactly.
MAX_EXACT_INT = 2**24


def _number(column: Column, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(column.name, f"must be a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidField(column.name, "must be a finite number")
    if column.type == "int":
        if not number.is_integer():
            raise InvalidField(column.name, f"must be a whole number, got {value!r}")
        if abs(number) > MAX_EXACT_INT:
            raise InvalidField(column.name, f"must be within ±{MAX_EXACT_INT}")
    if column.min is not None and number < column.min:
        raise InvalidField(column.name, f"{value!r} is below the minimum {column.min:g}")
    if column.max is not None and number > column.max:
        raise InvalidField(column.name, f"{value!r} is above the maximum {column.max:g}")
    return number


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class TabularCodec:
    def __init__(self, spec: TabularInput) -> None:
        self.spec = spec
        self.columns = tuple(spec.columns)
        self._index = {c.name: {v: i for i, v in enumerate(c.values or [])} for c in self.columns}
        self._names = {c.name for c in self.columns}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def check(self, row: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """(codes, the canonical row) of a JSON object; InvalidField names the first bad column."""
        if not isinstance(row, dict):
            raise InvalidField("", f"a row is a JSON object of column → value, got {_kind(row)}")
        unknown = sorted(str(k) for k in row if k not in self._names)
        if unknown:
            raise InvalidField(unknown[0][:64], f"is not a column of this project ({', '.join(self.names[:20])})")
        codes = np.empty(len(self.columns), dtype=np.float32)
        canonical: dict[str, Any] = {}
        for i, column in enumerate(self.columns):
            value = row.get(column.name)
            if value is None:
                if not column.nullable:
                    what = "is missing" if column.name not in row else "may not be null"
                    raise InvalidField(column.name, f"{what} (the column is not nullable)")
                codes[i] = np.nan
                canonical[column.name] = None
            elif column.type == "category":
                if not isinstance(value, str):
                    raise InvalidField(
                        column.name, f"must be one of the column's values (a string), got {_kind(value)}"
                    )
                code = self._index[column.name].get(value)
                if code is None:
                    shown = ", ".join((column.values or [])[:20])
                    raise InvalidField(column.name, f"{value[:64]!r} is not one of its values ({shown})")
                codes[i] = code
                canonical[column.name] = value
            else:
                number = _number(column, value)
                codes[i] = number
                canonical[column.name] = int(number) if column.type == "int" else number
        return codes, canonical

    def canonical_bytes(self, canonical: dict[str, Any]) -> bytes:
        """The stored original of a row: its canonical JSON, columns in spec order."""
        return json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()

    def from_bytes(self, data: bytes) -> np.ndarray:
        """Codes of a stored row (what canonical_bytes wrote)."""
        try:
            row = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField("", f"not a JSON row: {exc}") from None
        return self.check(row)[0]

    def row_of(self, codes: np.ndarray) -> dict[str, Any]:
        """Codes back to a row (categories by name, NaN as null): what a person reads."""
        out: dict[str, Any] = {}
        for column, code in zip(self.columns, np.asarray(codes, dtype=np.float64), strict=True):
            if math.isnan(code):
                out[column.name] = None
            elif column.type == "category":
                out[column.name] = (column.values or [])[int(code)]
            else:
                out[column.name] = int(code) if column.type == "int" else float(code)
        return out

"""Tensors as the domain sees them: KServe datatypes, numpy arrays, and decoding with clear errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.modelserver.errors import InvalidInput
from services.oip import DTYPES


def datatype_of(config_type_name: str) -> str:
    """`TYPE_FP32` (config.pbtxt) -> `FP32` (protocol)."""
    return config_type_name.removeprefix("TYPE_")


_DATATYPE_OF_DTYPE: dict[np.dtype, str] = {}
for _name, _dtype in DTYPES.items():
    _DATATYPE_OF_DTYPE.setdefault(_dtype, _name)  # the first name wins, as the old linear scan did


def datatype_of_array(array: np.ndarray) -> str:
    name = _DATATYPE_OF_DTYPE.get(array.dtype)
    if name is None:
        for candidate, dtype in DTYPES.items():  # byte order or alignment variants that compare equal
            if array.dtype == dtype:
                return candidate
        raise InvalidInput(f"unsupported output dtype {array.dtype}")
    return name


def _check_shape(name: str, shape: Sequence[int]) -> int:
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes, max_bytes: int) -> np.ndarray:
    """Raw little-endian row-major bytes -> array, checking the byte length against shape and datatype."""
    dtype = _dtype(name, datatype)
    if len(raw) > max_bytes:
        raise InvalidInput(f"input {name!r} is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    count = _check_shape(name, shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} bytes of data, expected {expected} "
            f"({datatype} x shape {list(shape)} = {count} elements of {dtype.itemsize} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def decode_values(name: str, datatype: str, shape: Sequence[int], values: Any, max_bytes: int) -> np.ndarray:
    """A (possibly nested) list of numbers -> array, checking the element count against shape."""
    dtype = _dtype(name, datatype)
    count = _check_shape(name, shape)
    if count * dtype.itemsize > max_bytes:
        raise InvalidInput(f"input {name!r} is {count * dtype.itemsize} bytes, over the limit of {max_bytes} bytes")
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {name!r}: data is not a list of {datatype} numbers ({exc})") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} elements of data, expected {count} for shape {list(shape)}")
    return array.reshape(tuple(shape))


def _dtype(name: str, datatype: str) -> np.dtype:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise InvalidInput(
            f"input {name!r}: unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}"
        ) from None


@dataclass
class InferRequest:
    """One inference request after decoding: arrays by input name, nothing of the transport left."""

    model: str
    version: str  # "" = the version the server picks (the newest loaded)
    inputs: dict[str, np.ndarray]
    id: str = ""
    outputs: list[str] = field(default_factory=list)  # empty = every output
    timeout_s: float | None = None  # from the client's deadline or `timeout` parameter


@dataclass
class InferResult:
    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]

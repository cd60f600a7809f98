"""The protocol's datatypes as numpy, and tensors decoded from raw bytes or JSON values with clear errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.oip.errors import ProtocolError

# Datatype name -> numpy dtype (little-endian, as the protocol's raw bytes are).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# Datatype name -> the InferTensorContents field that carries it (FP16 travels only as raw bytes).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

# Most dimensions a tensor may have (numpy's own ceiling is 64; no model here takes more than a few).
MAX_DIMS = 32
# Largest single dimension: a count that fits in numpy's index type with room to spare.
MAX_DIM = 1 << 62

_DATATYPE_OF_DTYPE: dict[np.dtype, str] = {}
for _name, _dtype in DTYPES.items():
    _DATATYPE_OF_DTYPE.setdefault(_dtype, _name)  # the first name wins


def datatype_of(config_type_name: str) -> str:
    """`TYPE_FP32` (config.pbtxt) -> `FP32` (protocol)."""
    return config_type_name.removeprefix("TYPE_")


def datatype_of_array(array: np.ndarray) -> str:
    name = _DATATYPE_OF_DTYPE.get(array.dtype)
    if name is None:
        for candidate, dtype in DTYPES.items():  # byte order or alignment variants that compare equal
            if array.dtype == dtype:
                return candidate
        raise ProtocolError(f"unsupported output dtype {array.dtype}")
    return name


def _check_shape(name: str, shape: Sequence[int]) -> int:
    if len(shape) > MAX_DIMS:
        raise ProtocolError(f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_DIMS} are allowed")
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {list(shape)[:MAX_DIMS]} has a negative dimension")
    if any(d > MAX_DIM for d in shape):
        raise ProtocolError(f"input {name!r}: a dimension of shape {list(shape)} is over {MAX_DIM}")
    return math.prod(shape)


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes, max_bytes: int) -> np.ndarray:
    """Raw little-endian row-major bytes -> array, checking the byte length against shape and datatype."""
    dtype = _dtype(name, datatype)
    if len(raw) > max_bytes:
        raise ProtocolError(f"input {name!r} is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    count = _check_shape(name, shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise ProtocolError(
            f"input {name!r}: {len(raw)} bytes of data, expected {expected} "
            f"({datatype} x shape {list(shape)} = {count} elements of {dtype.itemsize} bytes)"
        )
    return _reshape(name, np.frombuffer(raw, dtype=dtype), shape)


def decode_values(name: str, datatype: str, shape: Sequence[int], values: Any, max_bytes: int) -> np.ndarray:
    """A (possibly nested) list of numbers -> array, checking the element count against shape."""
    dtype = _dtype(name, datatype)
    count = _check_shape(name, shape)
    if count * dtype.itemsize > max_bytes:
        raise ProtocolError(f"input {name!r} is {count * dtype.itemsize} bytes, over the limit of {max_bytes} bytes")
    try:
        array = np.asarray(values, dtype=dtype)
    except OverflowError as exc:  # e.g. INT8 data 1000, UINT data -1
        raise ProtocolError(f"input {name!r}: a value is out of range for {datatype} ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: data is not a list of {datatype} numbers ({exc})") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} elements of data, expected {count} for shape {list(shape)}")
    return _reshape(name, array, shape)


def _reshape(name: str, array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    try:
        return array.reshape(tuple(shape))
    except ValueError as exc:  # e.g. zero elements in a shape whose other dimensions overflow numpy's size
        raise ProtocolError(f"input {name!r}: shape {list(shape)} is not a valid array shape ({exc})") from None


def _dtype(name: str, datatype: str) -> np.dtype:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise ProtocolError(
            f"input {name!r}: unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}"
        ) from None

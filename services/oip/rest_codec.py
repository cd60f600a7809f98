"""v2 REST inference bodies ↔ `InferRequest` / `InferResponse`: JSON tensors and Triton's binary extension.

A body is a JSON document, optionally followed by raw tensor bytes: `Inference-Header-Content-Length`
says where the JSON ends and each binary tensor names its size in `parameters.binary_data_size`
(what `tritonclient.http` sends and expects). A client asks for binary outputs per output
(`outputs[i].parameters.binary_data`) or for all (`parameters.binary_data_output`).

Both directions are here for both sides: the model server decodes requests and encodes answers;
the gateway decodes its callers' requests, encodes the hop's request (every tensor binary), decodes
the hop's answer and encodes its caller's answer with the same function the model server uses.

JSON goes through orjson: a body of JSON numbers is most of a small request's CPU with the standard
library's parser, and both services parse every body they are sent. Non-finite floats travel as
`NaN`, `Infinity` and `-Infinity`, as Triton's JSON (RapidJSON with its NaN/Inf flags) writes and
reads them, so tritonclient and perf_analyzer bodies holding them parse here too. orjson refuses
those tokens, so a body that holds one goes straight to pydantic-core's parser (jiter, already a
dependency through pydantic), which reads them with exact floats and a nesting limit. A 17 KB body
of 784 random FP32 values as perf_analyzer sends them (nearly every one holds a NaN), per parse on
this repo's 2-vCPU VM: orjson failing at the first NaN and then ujson 93 µs, jiter 40 µs; the
standard library 144 µs. A finite body: orjson 26 µs, jiter 38 µs. Answers holding a non-finite
float are written by pydantic-core too (orjson would write null).

Flywheel's one extension: `X-Flywheel-Timeout-Ms`, a deadline that travels without touching the
body (how the gateway passes on what is left of its budget). With Triton's `timeout` parameter
(µs) as well, the shorter wins.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pydantic_core

from services.oip.datatypes import datatype_of_array, decode_raw, decode_values
from services.oip.errors import ProtocolError
from services.oip.messages import InferRequest, InferResponse, Parameter

HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()
TIMEOUT_HEADER = "x-flywheel-timeout-ms"
# A client deadline longer than this is a mistake (ms for µs, seconds for ms), not a budget: refused.
MAX_TIMEOUT_MS = 3_600_000.0
JSON = "application/json"
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class BinaryOutputs:
    """Which outputs a REST client wants as binary data: by name, else the request-wide default."""

    default: bool = False
    named: dict[str, bool] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return self.named.get(name, self.default)


def timeout_from_header(raw: str | None) -> float | None:
    """X-Flywheel-Timeout-Ms → seconds (None when absent); a ProtocolError unless a number of milliseconds in
    (0, MAX_TIMEOUT_MS]."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_MS:  # NaN and inf fail this too
        raise ProtocolError(
            f"header X-Flywheel-Timeout-Ms must be a positive number of milliseconds, at most {MAX_TIMEOUT_MS:.0f} "
            f"(one hour), got {raw[:40]!r}; leave it out to have no deadline"
        )
    return value / 1000


def compressed(headers: Mapping[str, str]) -> bool:
    """Whether the body comes with a Content-Encoding to undo (CPU work, up to the decompressed size limit)."""
    return _encoding(headers.get("content-encoding")) != "identity"


def _encoding(raw: str | None) -> str:
    return (raw or "").strip().lower() or "identity"


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate bodies (tritonclient's request_compression_algorithm), bounded in size."""
    encoding = _encoding(encoding)
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {encoding[:40]!r} is not supported; use gzip, deflate or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"request body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(f"decompressed request body is over the limit of {limit} bytes")
    if not inflater.eof:
        raise ProtocolError(f"request body is a truncated {encoding} stream")
    if inflater.unused_data:
        extra = len(inflater.unused_data)
        raise ProtocolError(f"request body has {extra} bytes after the end of its {encoding} stream")
    return out


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        split = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} is not an integer: {header_length!r}") from None
    if not 0 <= split <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {split} is outside the body of {len(body)} bytes")
    return body[:split], memoryview(body)[split:]


def _binary_size(tensor: dict[str, Any]) -> Any:
    params = tensor.get("parameters")
    return params.get("binary_data_size") if isinstance(params, dict) else None


_NON_FINITE = (b"NaN", b"Infinity")


def _loads(head: bytes, what: str) -> Any:
    """JSON → Python, with Triton's non-finite float tokens; a ProtocolError naming `what` when it is not JSON."""
    # A search of the bytes costs ~1 µs; orjson failing at a NaN and parsing again costs ~12 µs more. A string
    # holding "NaN" takes the slower parser too, and still parses the same.
    if any(token in head for token in _NON_FINITE):
        try:
            # jiter: NaN, Infinity and -Infinity read; nesting deeper than 200 refused (a v2 body needs ~10).
            return pydantic_core.from_json(head, allow_inf_nan=True, cache_strings="keys")
        except ValueError as exc:
            raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None


def decode_request(
    model: str, version: str, body: bytes, headers: Mapping[str, str], max_tensor_bytes: int, max_body_bytes: int
) -> tuple[InferRequest, BinaryOutputs]:
    """A v2 REST inference body and its headers (lower-case names) → the request, plus the answer's format."""
    body = decompress(body, headers.get("content-encoding", ""), max_body_bytes)
    head, binary = _split(body, headers.get(HEADER_LENGTH_KEY))
    doc = _loads(head, "inference request")
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ProtocolError("inference request must be a JSON object with an 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("inference request 'parameters' must be a JSON object")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{i}] must be an object with name, datatype, shape and data")
        name = str(tensor.get("name", ""))
        datatype = str(tensor.get("datatype", ""))
        shape = tensor.get("shape")
        if not name or not datatype or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise ProtocolError(f"inputs[{i}] ({name or 'unnamed'}) needs a name, a datatype and an integer shape")
        if name in inputs:
            raise ProtocolError(f"input {name!r} appears twice")
        size = _binary_size(tensor)
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"input {name!r}: binary_data_size {size} runs past the binary body")
            inputs[name] = decode_raw(name, datatype, shape, bytes(binary[offset : offset + size]), max_tensor_bytes)
            offset += size
        elif "data" in tensor:
            inputs[name] = decode_values(name, datatype, shape, tensor["data"], max_tensor_bytes)
        else:
            raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    default_binary = bool(params.get("binary_data_output", False))
    named: dict[str, bool] = {}
    for out in doc.get("outputs") or []:
        if not isinstance(out, dict) or "name" not in out:
            raise ProtocolError("each requested output needs a name")
        out_params = out.get("parameters")
        wants = out_params.get("binary_data", default_binary) if isinstance(out_params, dict) else default_binary
        named[str(out["name"])] = bool(wants)
    given = [
        t
        for t in (_timeout_param(params.get("timeout")), timeout_from_header(headers.get(TIMEOUT_HEADER)))
        if t is not None
    ]
    request = InferRequest(
        model=model,
        version=version,
        inputs=inputs,
        id=str(doc.get("id", "")),
        outputs=list(named),
        timeout_s=min(given) if given else None,
        parameters={k: v for k, v in params.items() if k != "binary_data_output" and _scalar(v)},
    )
    return request, BinaryOutputs(default_binary, named)


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _timeout_param(value: Any) -> float | None:
    """Triton's `timeout` request parameter is in microseconds; 0 means none (as in Triton)."""
    if value is None or value == 0:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"parameter 'timeout' must be a non-negative number of microseconds, got {value!r}")
    return float(value) / 1e6


def encode_response(response: InferResponse, binary: BinaryOutputs) -> tuple[bytes, dict[str, str]]:
    """An answer → (body, content headers), each output as JSON data or binary as the client asked."""
    outputs = []
    chunks: list[bytes] = []
    non_finite = False
    for name, array in response.outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of_array(array), "shape": list(array.shape)}
        if binary.wants(name):
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
            non_finite = non_finite or (array.dtype.kind == "f" and not np.isfinite(array).all())
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    # orjson would write a NaN as null, which no v2 client reads back as a number: Triton's tokens instead.
    head = pydantic_core.to_json(doc, inf_nan_mode="constants") if non_finite else orjson.dumps(doc)
    if not chunks:
        return head, {"content-type": JSON}
    return b"".join([head, *chunks]), {"content-type": BINARY, HEADER_LENGTH: str(len(head))}


def encode_request(request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """A request → (body, content headers) with every tensor as binary data, asking for binary outputs.

    The gateway's hop to the model server: no JSON numbers either way, whatever its caller sent.
    """
    chunks: list[bytes] = []
    inputs = []
    for name, array in request.inputs.items():
        raw = np.ascontiguousarray(array).tobytes()
        inputs.append(
            {
                "name": name,
                "datatype": datatype_of_array(array),
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    doc: dict[str, Any] = {"inputs": inputs}
    if request.id:
        doc["id"] = request.id
    doc["parameters"] = {**request.parameters, "binary_data_output": True}
    if request.outputs:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in request.outputs]
    head = orjson.dumps(doc)
    return b"".join([head, *chunks]), {"content-type": BINARY, HEADER_LENGTH_KEY: str(len(head))}


def decode_response(body: bytes, header_length: str | None) -> InferResponse:
    """A v2 REST answer (binary or JSON tensors) → the response; a ProtocolError when it is not one."""
    head, binary = _split(body, header_length)
    doc = _loads(head, "the answer")
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs", []), list):
        raise ProtocolError("the answer is not a v2 inference response")
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for t in doc.get("outputs") or []:
        if not isinstance(t, dict) or not isinstance(t.get("shape"), list):
            raise ProtocolError("an output of the answer has no shape")
        name, datatype, shape = str(t.get("name", "")), str(t.get("datatype", "")), t["shape"]
        size = _binary_size(t)
        # The answer's own size bounds its tensors: a JSON number takes a byte at least, an element 8 at most.
        if isinstance(size, int):
            if size < 0 or offset + size > len(binary):
                raise ProtocolError(f"output {name!r}: binary_data_size {size} runs past the binary body")
            outputs[name] = decode_raw(name, datatype, shape, bytes(binary[offset : offset + size]), len(binary))
            offset += size
        else:
            outputs[name] = decode_values(name, datatype, shape, t.get("data", []), 8 * len(head))
    return InferResponse(
        model=str(doc.get("model_name", "")),
        version=str(doc.get("model_version", "")),
        id=str(doc.get("id", "")),
        outputs=outputs,
    )


__all__ = [
    "BINARY",
    "HEADER_LENGTH",
    "HEADER_LENGTH_KEY",
    "JSON",
    "TIMEOUT_HEADER",
    "BinaryOutputs",
    "Parameter",
    "compressed",
    "decode_request",
    "decode_response",
    "decompress",
    "encode_request",
    "encode_response",
    "timeout_from_header",
]

"""KServe v2 tensors as numpy: views of a protobuf request's or response's tensors, and of v2 REST bodies."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from services.gateway.errors import InvalidInput
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip import CONTENTS_FIELD, DTYPES

NUMPY = DTYPES
CONTENTS = CONTENTS_FIELD


def _array(datatype: str, shape: list[int], raw: bytes | None, contents: pb.InferTensorContents) -> np.ndarray | None:
    dtype = NUMPY.get(datatype)
    if dtype is None:
        return None
    if raw is not None:
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        field = CONTENTS.get(datatype)
        if field is None:
            return None
        arr = np.asarray(getattr(contents, field), dtype=dtype)
    try:
        return arr.reshape(shape)
    except ValueError:
        return None


def input_array(req: pb.ModelInferRequest, i: int) -> np.ndarray | None:
    t = req.inputs[i]
    raw = req.raw_input_contents[i] if len(req.raw_input_contents) > i else None
    return _array(t.datatype, list(t.shape), raw, t.contents)


def output_array(resp: pb.ModelInferResponse, i: int) -> np.ndarray | None:
    t = resp.outputs[i]
    raw = resp.raw_output_contents[i] if len(resp.raw_output_contents) > i else None
    return _array(t.datatype, list(t.shape), raw, t.contents)


# -- v2 REST bodies, read after the answer went out (prediction logs) -----------------------------
def rest_document(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview] | None:
    """A v2 REST body → (its JSON document, the binary tensor bytes after it); None when unreadable."""
    split = len(body)
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            return None
    try:
        doc = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError):
        return None
    return (doc, memoryview(body)[split:]) if isinstance(doc, dict) else None


def rest_tensors(doc: dict[str, Any], binary: memoryview, key: str) -> list[tuple[str, np.ndarray | None]]:
    """Every tensor under doc[key] ("inputs" or "outputs") as (datatype, array or None), in order."""
    found: list[tuple[str, np.ndarray | None]] = []
    offset = 0
    for t in doc.get(key) or []:
        if not isinstance(t, dict):
            return found
        datatype, shape = t.get("datatype"), t.get("shape")
        size = (t.get("parameters") or {}).get("binary_data_size") if isinstance(t.get("parameters"), dict) else None
        arr = None
        dtype = NUMPY.get(datatype) if isinstance(datatype, str) else None
        try:
            if isinstance(size, int):
                if dtype is not None:
                    arr = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
                offset += size
            elif dtype is not None and "data" in t:
                arr = np.asarray(t["data"], dtype=dtype).reshape(shape)
        except (ValueError, TypeError, OverflowError):
            arr = None
        found.append((str(datatype), arr))
    return found


# -- gRPC ModelInferRequest ↔ v2 REST with binary tensors (the gateway's hop to the model server) --
def _param_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def request_to_binary(request: pb.ModelInferRequest) -> tuple[bytes, int]:
    """A ModelInferRequest → a v2 REST body with every tensor as binary data, asking for binary outputs.

    Returns (body, JSON header length) for `Inference-Header-Content-Length`. Typed `contents` are
    packed into raw bytes here; shapes and byte counts are left for the model server to judge.
    """
    raw_given = len(request.raw_input_contents)
    if raw_given and raw_given != len(request.inputs):
        raise InvalidInput(f"{raw_given} raw_input_contents for {len(request.inputs)} inputs")
    chunks: list[bytes] = []
    inputs = []
    for i, t in enumerate(request.inputs):
        if raw_given:
            raw = request.raw_input_contents[i]
        else:
            dtype, field = NUMPY.get(t.datatype), CONTENTS.get(t.datatype)
            if dtype is None or field is None:
                raise InvalidInput(f"input {t.name!r}: datatype {t.datatype!r} is not one of {', '.join(NUMPY)}")
            raw = np.asarray(getattr(t.contents, field), dtype=dtype).tobytes()
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = {k: _param_value(v) for k, v in t.parameters.items()}
        params["binary_data_size"] = len(raw)
        entry["parameters"] = params
        inputs.append(entry)
        chunks.append(raw)
    doc: dict[str, Any] = {"inputs": inputs}
    if request.id:
        doc["id"] = request.id
    params = {k: _param_value(v) for k, v in request.parameters.items()}
    params["binary_data_output"] = True
    doc["parameters"] = params
    if request.outputs:
        doc["outputs"] = [{"name": o.name, "parameters": {"binary_data": True}} for o in request.outputs]
    head = json.dumps(doc, separators=(",", ":")).encode()
    return b"".join([head, *chunks]), len(head)


def binary_to_response(body: bytes, header_length: str | None) -> pb.ModelInferResponse:
    """The model server's v2 REST answer (binary or JSON tensors) → ModelInferResponse with raw outputs."""
    found = rest_document(body, header_length)
    if found is None:
        raise ValueError("the model server's answer is not a v2 inference response")
    doc, binary = found
    response = pb.ModelInferResponse(
        model_name=str(doc.get("model_name", "")),
        model_version=str(doc.get("model_version", "")),
        id=str(doc.get("id", "")),
    )
    offset = 0
    for t in doc.get("outputs") or []:
        datatype, shape = str(t.get("datatype", "")), [int(d) for d in t.get("shape") or []]
        response.outputs.add(name=str(t.get("name", "")), datatype=datatype, shape=shape)
        size = (t.get("parameters") or {}).get("binary_data_size")
        if isinstance(size, int):
            response.raw_output_contents.append(bytes(binary[offset : offset + size]))
            offset += size
        else:
            response.raw_output_contents.append(np.asarray(t.get("data", []), dtype=NUMPY[datatype]).tobytes())
    return response

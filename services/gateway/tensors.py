"""KServe v2 tensors: JSON ↔ protobuf, and numpy views of a request's or response's tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.gateway.errors import InvalidInput
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip import CONTENTS_FIELD, DTYPES

NUMPY = DTYPES
CONTENTS = CONTENTS_FIELD
PARAM_KINDS = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}


def _param(value: Any) -> pb.InferParameter:
    kind = PARAM_KINDS.get(type(value))
    if kind is None:
        raise InvalidInput(f"parameter value {value!r} must be a bool, number or string")
    return pb.InferParameter(**{kind: value})


def json_to_request(model: str, version: str, doc: Any) -> pb.ModelInferRequest:
    """A v2 JSON inference request → ModelInferRequest (tensors as raw bytes); 400 on anything off."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput("inference request must be a JSON object with a non-empty 'inputs' list")
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=str(doc.get("id", "")))
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    for k, v in params.items():
        req.parameters[str(k)].CopyFrom(_param(v))
    for i, t in enumerate(doc["inputs"]):
        if not isinstance(t, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, datatype, shape and data")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not name or datatype not in NUMPY:
            raise InvalidInput(f"inputs[{i}] needs a name and a datatype among {', '.join(NUMPY)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
        if "data" not in t:
            raise InvalidInput(f"input {name!r} has no 'data' (binary tensor data is not accepted by the gateway)")
        try:
            arr = np.asarray(t["data"], dtype=NUMPY[datatype])
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f"input {name!r}: data is not a list of {datatype} values") from None
        if arr.size != int(np.prod(shape)):
            raise InvalidInput(f"input {name!r}: {arr.size} values for shape {shape}")
        req.inputs.add(name=name, datatype=datatype, shape=shape)
        req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    for o in doc.get("outputs") or []:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidInput("each requested output needs a name")
        req.outputs.add(name=o["name"])
    return req


def response_to_json(resp: pb.ModelInferResponse) -> dict[str, Any]:
    outputs = []
    for i, out in enumerate(resp.outputs):
        arr = output_array(resp, i)
        data = arr.ravel().tolist() if arr is not None else []
        outputs.append({"name": out.name, "datatype": out.datatype, "shape": list(out.shape), "data": data})
    doc: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs}
    if resp.id:
        doc["id"] = resp.id
    return doc


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

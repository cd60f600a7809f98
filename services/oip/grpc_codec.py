"""`inference.ModelInferRequest` / `ModelInferResponse` ↔ `InferRequest` / `InferResponse`.

Tensors come as `raw_input_contents` (one per input, what tritonclient sends) or typed `contents`;
an answer goes back raw when the request came raw (or had no inputs), typed otherwise.
"""

from __future__ import annotations

import numpy as np

from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip.datatypes import CONTENTS_FIELD, DTYPES, datatype_of_array, decode_raw, decode_values
from services.oip.errors import ProtocolError
from services.oip.messages import InferRequest, InferResponse, Parameter


def parameter_value(p: pb.InferParameter) -> Parameter | None:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def decode_request(request: pb.ModelInferRequest, time_remaining: float | None, max_bytes: int) -> InferRequest:
    """The message → the request; `time_remaining` is the call's own deadline (None: none given)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; expected one per input")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in inputs:
            raise ProtocolError(f"input {name!r} appears twice")
        if raw:
            inputs[name] = decode_raw(name, datatype, shape, raw[i], max_bytes)
            continue
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise ProtocolError(f"input {name!r}: unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}")
        inputs[name] = decode_values(name, datatype, shape, getattr(tensor.contents, field), max_bytes)
    timeouts = [t for t in (time_remaining, _timeout_param(request)) if t is not None]
    parameters = {k: v for k, p in request.parameters.items() if (v := parameter_value(p)) is not None}
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        inputs=inputs,
        id=request.id,
        outputs=[o.name for o in request.outputs],
        timeout_s=min(timeouts) if timeouts else None,
        parameters=parameters,
    )


def _timeout_param(request: pb.ModelInferRequest) -> float | None:
    """Triton's `timeout` request parameter, in microseconds."""
    if "timeout" not in request.parameters:
        return None
    p = request.parameters["timeout"]
    choice = p.WhichOneof("parameter_choice")
    if choice not in ("int64_param", "uint64_param", "double_param") or getattr(p, choice) < 0:
        raise ProtocolError("parameter 'timeout' must be a non-negative number of microseconds")
    value = float(getattr(p, choice))
    return value / 1e6 if value else None  # 0 means none, as in Triton


def wants_raw(request: pb.ModelInferRequest) -> bool:
    """Answer with raw_output_contents when the request came with raw tensors (or none at all)."""
    return bool(request.raw_input_contents) or not request.inputs


def encode_response(response: InferResponse, raw: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for name, array in response.outputs.items():
        datatype = datatype_of_array(array)
        out = message.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            message.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        else:
            getattr(out.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return message

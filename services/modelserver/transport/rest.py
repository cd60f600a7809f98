"""KServe v2 REST (plus Triton's repository, configuration, statistics and binary-tensor extensions).

Each route converts, makes one data-plane call, and converts back; errors go through the one
status table. The JSON matches what `tritonclient.http` sends and expects, including binary
tensor data (`Inference-Header-Content-Length` + `binary_data_size`).

A caller's deadline comes as Triton's `timeout` parameter (µs) or, without touching the body, as
the header `X-Flywheel-Timeout-Ms` (how the gateway passes on what is left of its budget); with
both, the shorter wins. `X-Request-Id` names the request in logs when the body has no `id`.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.modelserver.dataplane import DataPlane
from services.modelserver.errors import InvalidInput, ModelServerError
from services.modelserver.registry import ServedVersion
from services.modelserver.tensors import InferRequest, InferResult, datatype_of_array, decode_raw, decode_values
from services.modelserver.transport.status import retry_after_s, status_of
from services.oip.asgi import BodyTooLarge, ClientGone, InferCall, InferRoute, error_body, read_body, reply
from services.telemetry import Readiness, health_router, request_id_var

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()
TIMEOUT_HEADER = "x-flywheel-timeout-ms"
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64}


def build_asgi(dp: DataPlane, readiness: Readiness, max_request_bytes: int) -> InferRoute:
    """The model server's HTTP application: the v2 inference route ahead of the FastAPI app."""

    async def infer(call: InferCall) -> None:
        try:
            body = await read_body(call, 4 * max_request_bytes)
            answer, headers = await infer_answer(dp, max_request_bytes, call.model, call.version, call.headers, body)
        except ClientGone:
            return
        except BodyTooLarge as exc:
            await reply(call.send, *error_reply(InvalidInput(str(exc))))
        except ModelServerError as exc:
            await reply(call.send, *error_reply(exc))
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"path": f"/v2/models/{call.model}/infer"})
            await reply(call.send, 500, {}, error_body(f"internal error: {type(exc).__name__}"))
        else:
            await reply(call.send, 200, headers, answer)

    return InferRoute(build_app(dp, readiness, max_request_bytes), infer)


def error_reply(exc: ModelServerError) -> tuple[int, dict[str, str], bytes]:
    """A domain error as (HTTP status, headers, JSON body `{"error": …}`), by the one status table."""
    status, _ = status_of(exc)
    headers = {"content-type": "application/json"}
    retry = retry_after_s(exc)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        headers["Retry-After-Ms"] = str(max(1, math.ceil(retry * 1000)))
    return status, headers, error_body(exc.message)


async def infer_answer(
    dp: DataPlane, max_request_bytes: int, name: str, version: str, headers: Mapping[str, str], body: bytes
) -> tuple[bytes, dict[str, str]]:
    """A v2 REST inference: body and headers in, (answer body, answer headers) out; domain errors raised."""
    encoding = headers.get("content-encoding", "identity")
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, 4 * max_request_bytes)
    elif encoding != "identity":
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    infer_request, binary = decode_infer(name, version, body, headers.get(HEADER_LENGTH_KEY), max_request_bytes)
    header_timeout = _header_timeout_s(headers.get(TIMEOUT_HEADER))
    if header_timeout is not None and (infer_request.timeout_s is None or header_timeout < infer_request.timeout_s):
        infer_request.timeout_s = header_timeout
    request_id_var.set(infer_request.id or headers.get("x-request-id", ""))
    return encode_infer(await dp.infer(infer_request), binary)


def build_app(dp: DataPlane, readiness: Readiness, max_request_bytes: int) -> FastAPI:
    app = FastAPI(title="flywheel modelserver", docs_url=None, redoc_url=None)
    app.include_router(health_router(readiness))

    @app.exception_handler(ModelServerError)
    async def domain_error(request: Request, exc: ModelServerError) -> Response:
        status, headers, body = error_reply(exc)
        return Response(body, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200 if dp.live() else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if dp.ready() else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        name, version, extensions = dp.server_metadata()
        return {"name": name, "version": version, "extensions": extensions}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, version: str = "") -> Response:
        return Response(status_code=200 if dp.model_ready(name, version) else 400)

    @app.get("/v2/models/{name}/versions/{version}/config")
    @app.get("/v2/models/{name}/config")
    async def model_config(name: str, version: str = "") -> dict[str, Any]:
        return message_json(dp.model_config(name, version))

    @app.get("/v2/models/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    @app.get("/v2/models/{name}/stats")
    async def model_stats(name: str = "", version: str = "") -> dict[str, Any]:
        return {"model_stats": [stats_json(sv) for sv in dp.statistics(name, version)]}

    @app.get("/v2/models/{name}/versions/{version}")
    @app.get("/v2/models/{name}")
    async def model_metadata(name: str, version: str = "") -> dict[str, Any]:
        md = dp.model_metadata(name, version)
        return {
            "name": md.name,
            "versions": md.versions,
            "platform": md.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in md.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in md.outputs],
        }

    @app.post("/v2/models/{name}/versions/{version}/infer")
    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request, version: str = "") -> Response:
        """Served by `infer_route` ahead of FastAPI; the same handling, declared here as the route."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 4 * max_request_bytes:
            raise InvalidInput(f"request body is {length} bytes, over the limit of {4 * max_request_bytes} bytes")
        body, headers = await infer_answer(dp, max_request_bytes, name, version, request.headers, await request.body())
        return Response(body, headers=headers)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        body = await _json_body(request)
        rows = dp.index(ready_only=bool(body.get("ready", False)))
        return [_index_row(*r) for r in rows]

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(name: str, request: Request) -> Response:
        body = await _json_body(request)
        await dp.load(name, list((body.get("parameters") or {}).keys()))
        return Response(status_code=200)

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(name: str) -> Response:
        await dp.unload(name)
        return Response(status_code=200)

    return app


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate request bodies (tritonclient's request_compression_algorithm), bounded in size."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise InvalidInput(f"decompressed request body is over the limit of {limit} bytes")
    return out


def _index_row(name: str, version: str, state: str, reason: str) -> dict[str, str]:
    row = {"name": name, "state": state, "reason": reason}
    if version:
        row["version"] = version
    return row


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not JSON: {exc}") from None
    return body if isinstance(body, dict) else {}


# -- infer codec --------------------------------------------------------------------------------
def decode_infer(
    model: str, version: str, body: bytes, header_length: str | None, max_bytes: int
) -> tuple[InferRequest, dict[str, bool]]:
    """Body -> InferRequest, plus which outputs the client wants as binary data."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} is not an integer: {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {split} is outside the body of {len(body)} bytes")
        head, binary = body[:split], memoryview(body)[split:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"inference request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput("inference request must be a JSON object with an 'inputs' list")
    params = doc.get("parameters") or {}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, datatype, shape and data")
        name = str(tensor.get("name", ""))
        datatype = str(tensor.get("datatype", ""))
        shape = tensor.get("shape")
        if not name or not datatype or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise InvalidInput(f"inputs[{i}] ({name or 'unnamed'}) needs a name, a datatype and an integer shape")
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the binary body")
            inputs[name] = decode_raw(name, datatype, shape, bytes(binary[offset : offset + size]), max_bytes)
            offset += size
        elif "data" in tensor:
            inputs[name] = decode_values(name, datatype, shape, tensor["data"], max_bytes)
        else:
            raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    default_binary = bool(params.get("binary_data_output", False))
    binary_out: dict[str, bool] = {}
    for out in doc.get("outputs") or []:
        if not isinstance(out, dict) or "name" not in out:
            raise InvalidInput("each requested output needs a name")
        binary_out[out["name"]] = bool((out.get("parameters") or {}).get("binary_data", default_binary))
    binary_out.setdefault("*", default_binary)
    request = InferRequest(
        model=model,
        version=version,
        inputs=inputs,
        id=str(doc.get("id", "")),
        outputs=[k for k in binary_out if k != "*"],
        timeout_s=_timeout_s(params.get("timeout")),
    )
    return request, binary_out


def _timeout_s(value: Any) -> float | None:
    """Triton's `timeout` request parameter is in microseconds; 0 means none (as in Triton)."""
    if value is None or value == 0:
        return None
    if not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"parameter 'timeout' must be a non-negative number of microseconds, got {value!r}")
    return float(value) / 1e6


def _header_timeout_s(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or math.isinf(value):
        raise InvalidInput(f"header X-Flywheel-Timeout-Ms must be a positive number of milliseconds, got {raw!r}")
    return value / 1000


def encode_infer(result: InferResult, binary_out: dict[str, bool]) -> tuple[bytes, dict[str, str]]:
    outputs = []
    chunks: list[bytes] = []
    for name, array in result.outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of_array(array), "shape": list(array.shape)}
        if binary_out.get(name, binary_out.get("*", False)):
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": result.model, "model_version": result.version, "outputs": outputs}
    if result.id:
        doc["id"] = result.id
    head = json.dumps(doc).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return b"".join([head, *chunks]), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


# -- config and statistics as JSON --------------------------------------------------------------
def message_json(message: Message) -> dict[str, Any]:
    """Proto -> JSON with field names as in config.pbtxt and 64-bit integers as numbers (as Triton does)."""
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return _numbers(doc, message.DESCRIPTOR)


def _numbers(doc: dict[str, Any], desc: Descriptor) -> dict[str, Any]:
    for f in desc.fields:
        if f.name not in doc:
            continue
        value = doc[f.name]
        repeated = f.label == FieldDescriptor.LABEL_REPEATED
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                vf = f.message_type.fields_by_name["value"]
                if vf.type == FieldDescriptor.TYPE_MESSAGE:
                    doc[f.name] = {k: _numbers(v, vf.message_type) for k, v in value.items()}
            elif repeated:
                doc[f.name] = [_numbers(v, f.message_type) for v in value]
            else:
                doc[f.name] = _numbers(value, f.message_type)
        elif f.type in _INT64:
            doc[f.name] = [int(v) for v in value] if repeated else int(value)
    return doc


def _duration(d: Any) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def stats_json(sv: ServedVersion) -> dict[str, Any]:
    s = sv.metrics.stats
    zero = {"count": 0, "ns": 0}
    return {
        "name": sv.name,
        "version": str(sv.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            # Input/output copies are part of compute here; perf_analyzer needs the three counts equal.
            "compute_input": {"count": s.compute.count, "ns": 0},
            "compute_infer": _duration(s.compute),
            "compute_output": {"count": s.compute.count, "ns": 0},
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {
                "batch_size": n,
                "compute_input": {"count": d.count, "ns": 0},
                "compute_infer": _duration(d),
                "compute_output": {"count": d.count, "ns": 0},
            }
            for n, d in sorted(s.batches.items())
        ],
    }

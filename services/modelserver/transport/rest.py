"""KServe v2 REST (plus Triton's repository, configuration, statistics and binary-tensor extensions).

Each route converts, makes one data-plane call, and converts back; errors go through the one
status table. Inference is the v2 route of services/oip/asgi.py, ahead of the FastAPI app, with
the protocol's REST codec (services/oip/rest_codec.py): JSON as `tritonclient.http` sends and
expects, binary tensors, gzip/deflate bodies, Triton's `timeout` parameter and the
`X-Flywheel-Timeout-Ms` header. `X-Request-Id` names the request in logs when the body has no `id`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.modelserver.dataplane import DataPlane
from services.modelserver.served import ServedVersion
from services.modelserver.transport.status import ERRORS
from services.oip import rest_codec
from services.oip.asgi import InferCall, InferRoute
from services.telemetry import Readiness, health_router, request_id_var, valid_request_id
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.rest import BoundedBody, install_error_handlers, read_body, read_json

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 1 << 16  # repository index and load bodies: a flag or a few parameter names
# Open without a service credential, besides health, readiness and metrics: KServe's health probes.
PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready")
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64}


def build_asgi(
    dataplane: DataPlane, readiness: Readiness, max_request_bytes: int, callers: TrustedCallers
) -> CallerCheck:
    """The model server's HTTP application: the caller check, then the v2 inference route ahead of the FastAPI app."""
    # A tensor may be max_request_bytes; a body holds several (and JSON numbers take more room than bytes).
    max_body = 4 * max_request_bytes

    async def infer(call: InferCall) -> tuple[dict[str, str], bytes]:
        dataplane.admit()  # before the body is read and parsed: that is most of what a refusal saves
        body = await read_body(call.receive, call.headers.get("content-length"), max_body)
        args = (call.model, call.version, body, call.headers, max_request_bytes, max_body)
        if rest_codec.compressed(call.headers):  # inflating up to max_body is CPU work: off the event loop
            request, binary = await asyncio.to_thread(rest_codec.decode_request, *args)
        else:
            request, binary = rest_codec.decode_request(*args)
        request_id_var.set(valid_request_id(request.id or call.headers.get("x-request-id")))
        answer, headers = rest_codec.encode_response(await dataplane.infer(request), binary)
        return headers, answer

    app = BoundedBody(build_app(dataplane, readiness), MAX_ADMIN_BODY, ERRORS)
    return CallerCheck(InferRoute(app, infer, ERRORS), callers, ERRORS, PUBLIC_PATHS)


def build_app(dataplane: DataPlane, readiness: Readiness) -> FastAPI:
    app = FastAPI(title="flywheel modelserver", docs_url=None, redoc_url=None)
    app.include_router(health_router(readiness))
    install_error_handlers(app, ERRORS)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200 if dataplane.live() else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if dataplane.ready() else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        name, version, extensions = dataplane.server_metadata()
        return {"name": name, "version": version, "extensions": extensions}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, version: str = "") -> Response:
        return Response(status_code=200 if dataplane.model_ready(name, version) else 400)

    @app.get("/v2/models/{name}/versions/{version}/config")
    @app.get("/v2/models/{name}/config")
    async def model_config(name: str, version: str = "") -> dict[str, Any]:
        return message_json(dataplane.model_config(name, version))

    @app.get("/v2/models/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    @app.get("/v2/models/{name}/stats")
    async def model_stats(name: str = "", version: str = "") -> dict[str, Any]:
        return {"model_stats": [stats_json(served) for served in dataplane.statistics(name, version)]}

    @app.get("/v2/models/{name}/versions/{version}")
    @app.get("/v2/models/{name}")
    async def model_metadata(name: str, version: str = "") -> dict[str, Any]:
        metadata = dataplane.model_metadata(name, version)
        return {
            "name": metadata.name,
            "versions": metadata.versions,
            "platform": metadata.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.outputs],
        }

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        body = await _json_body(request)
        rows = dataplane.index(ready_only=bool(body.get("ready", False)))
        return [_index_row(*r) for r in rows]

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(name: str, request: Request) -> Response:
        body = await _json_body(request)
        await dataplane.load(name, list((body.get("parameters") or {}).keys()))
        return Response(status_code=200)

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(name: str) -> Response:
        await dataplane.unload(name)
        return Response(status_code=200)

    return app


def _index_row(name: str, version: str, state: str, reason: str) -> dict[str, str]:
    row = {"name": name, "state": state, "reason": reason}
    if version:
        row["version"] = version
    return row


async def _json_body(request: Request) -> dict[str, Any]:
    body = await read_json(request, MAX_ADMIN_BODY)
    return body if isinstance(body, dict) else {}


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


def stats_json(served: ServedVersion) -> dict[str, Any]:
    s = served.metrics.stats
    zero = {"count": 0, "ns": 0}
    return {
        "name": served.name,
        "version": str(served.version),
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

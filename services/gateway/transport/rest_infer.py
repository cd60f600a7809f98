"""The v2 REST inference route, the gateway's hot path, served in front of FastAPI.

`POST /v2/models/{name}[/versions/{version}]/infer` is declared once, here, as the bare ASGI route
of services/oip/asgi.py (FastAPI's layers would cost a large share of the gateway's budget); the
FastAPI app only documents it. The handler reads the body (bounded), admits the key, decodes
the body with the protocol's codec (JSON or binary tensors, gzip/deflate), makes the one
`Gateway.infer` call and encodes the answer as the caller asked for it.

Headers: `Authorization: Bearer <key>` (or `X-API-Key`), `X-Flywheel-Timeout-Ms`, and those of
transport/origin.py: `X-Flywheel-Sticky-Key`, `X-Flywheel-Synthetic`, `X-Request-Id` (names the
request when its body has no `id`).
"""

from __future__ import annotations

import asyncio

from services.gateway.auth import Guard
from services.gateway.dataplane import Gateway
from services.gateway.transport.observe import observe
from services.gateway.transport.origin import origin_of
from services.gateway.transport.status import ERRORS
from services.oip import rest_codec
from services.oip.asgi import InferCall, InferRoute
from services.transportkit.rest import ASGIApp, read_body


def infer_route(app: ASGIApp, gateway: Gateway, guard: Guard, max_request_bytes: int) -> InferRoute:
    """v2 inference POSTs answered here, ahead of the FastAPI `app`."""
    max_body = 4 * max_request_bytes  # gzip/deflate bodies inflate up to this (as at the model server)

    async def handle(call: InferCall) -> tuple[dict[str, str], bytes]:
        headers = call.headers
        with observe("v2_infer", call.model, "http", gateway.knows) as observation:
            key_id = await guard.admit_headers(headers, "predict")  # before a byte of the body is read
            body = await read_body(call.receive, headers.get("content-length"), max_request_bytes)
            args = (call.model, call.version, body, headers, max_request_bytes, max_body)
            if rest_codec.compressed(headers):  # inflating is CPU work: off the event loop
                request, binary = await asyncio.to_thread(rest_codec.decode_request, *args)
            else:
                request, binary = rest_codec.decode_request(*args)
            answer = await gateway.infer(request, origin_of(headers, key_id))
            observation.version = answer.response.version
        payload, reply_headers = rest_codec.encode_response(answer.response, binary)
        reply_headers["x-request-id"] = answer.request_id
        return reply_headers, payload

    return InferRoute(app, handle, ERRORS)

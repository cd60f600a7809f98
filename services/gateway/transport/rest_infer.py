"""The v2 REST inference route, the gateway's hot path, served in front of FastAPI.

`POST /v2/models/{name}[/versions/{version}]/infer` is answered by `InferFastPath`, a bare ASGI
layer, before FastAPI's middleware, routing, dependency and response layers: together they cost
~0.3 ms a request on this machine, a third of the gateway's 1 ms budget. Every other path goes on
to the FastAPI app, which also declares this route for the OpenAPI docs and serves it the same way
(through `V2Infer`) if it is ever reached there. Errors use the one status table.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.gateway.auth import Guard, presented_key
from services.gateway.dataplane import Gateway, RestResult
from services.gateway.errors import GatewayError, InvalidInput, RequestTooLarge
from services.gateway.rest_backend import BODY_HEADERS, HEADER_LENGTH_KEY
from services.gateway.tensors import rest_document
from services.gateway.transport.observe import observe
from services.gateway.transport.status import retry_after_s, status_of

log = logging.getLogger(__name__)

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def timeout_from_header(raw: str | None) -> float | None:
    """X-Flywheel-Timeout-Ms → seconds (None when absent); 400 when it is not a positive number."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"X-Flywheel-Timeout-Ms must be a number, got {raw!r}") from None
    if not value > 0:
        raise InvalidInput("X-Flywheel-Timeout-Ms must be positive")
    return value / 1000


def error_reply(exc: GatewayError) -> tuple[int, dict[str, str], bytes]:
    """A domain error as (HTTP status, headers, JSON body `{"error": …}`)."""
    status, _ = status_of(exc)
    headers = {}
    retry = retry_after_s(exc)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, headers, json.dumps({"error": exc.message}).encode()


def _http_status(exc: GatewayError) -> str:
    return str(status_of(exc)[0])


def _model_version(result: RestResult) -> str:
    doc = rest_document(result.answer.body, result.answer.header_length)
    return str(doc[0].get("model_version", "")) if doc is not None else ""


class V2Infer:
    """Admit, route and pass on one v2 REST inference request; transport-neutral (headers + bytes)."""

    def __init__(self, gateway: Gateway, guard: Guard) -> None:
        self.gateway = gateway
        self.guard = guard

    async def __call__(self, name: str, version: str, headers: Mapping[str, str], body: bytes) -> RestResult:
        with observe("v2_infer", name, _http_status, "200") as ob:
            key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
            key_id = (await self.guard.admit(key, "predict")).key_id
            deadline = self.gateway.deadline(timeout_from_header(headers.get("x-flywheel-timeout-ms")))
            forward = {k: v for k in BODY_HEADERS if (v := headers.get(k)) is not None}
            if rid := headers.get("x-request-id"):
                forward["x-request-id"] = rid
            result = await self.gateway.infer_rest(
                name, version, body, forward, key_id, deadline, headers.get("x-flywheel-sticky-key")
            )
            ob.version = result.choice.version or _model_version(result)
            return result

    @staticmethod
    def reply_headers(result: RestResult) -> dict[str, str]:
        headers = {
            "content-type": result.answer.content_type or "application/json",
            "x-request-id": result.request_id,
        }
        if result.answer.header_length is not None:
            headers[HEADER_LENGTH_KEY] = result.answer.header_length
        return headers


class InferFastPath:
    """ASGI: v2 inference POSTs answered here; everything else passed to `app`."""

    def __init__(self, app: ASGIApp, infer: V2Infer, max_request_bytes: int) -> None:
        self.app = app
        self.infer = infer
        self.max_request_bytes = max_request_bytes

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any
    ) -> None:
        match = INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._body(headers, receive)
            result = await self.infer(match.group(1), match.group(2) or "", headers, body)
        except GatewayError as exc:
            await _send(send, *error_reply(exc))
            return
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"path": scope["path"]})
            await _send(send, 500, {}, json.dumps({"error": f"internal error: {type(exc).__name__}"}).encode())
            return
        await _send(send, 200, V2Infer.reply_headers(result), result.answer.body)
        # After the answer went out: prediction log and shadow mirror cost the caller nothing.
        self.infer.gateway.after_rest(result)

    async def _body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        limit = self.max_request_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestTooLarge(f"body of {length} bytes is over the limit of {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if not any(k == b"content-type" for k, _ in raw):
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})

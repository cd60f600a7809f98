"""The v2 inference route as a bare ASGI layer, for the model server and the gateway alike.

`POST /v2/models/{name}[/versions/{version}]/infer` is every REST caller's hot path. Served through
FastAPI it pays the middleware, routing, dependency and response layers: ~0.2-0.3 ms of CPU a
request on a 2-core box, as much as the rest of the request. Each service puts an `InferRoute`
in front of its FastAPI app: inference POSTs go to the service's handler, every other path goes
on to FastAPI, which still declares the route for its docs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class InferCall:
    """One v2 inference request as the route saw it: names from the path, lower-case headers."""

    __slots__ = ("headers", "model", "receive", "send", "version")

    def __init__(self, model: str, version: str, headers: dict[str, str], receive: Receive, send: Send) -> None:
        self.model = model
        self.version = version
        self.headers = headers
        self.receive = receive
        self.send = send


InferHandler = Callable[[InferCall], Awaitable[None]]
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class InferRoute:
    """ASGI: v2 inference POSTs go to `handler`; everything else to `app`."""

    def __init__(self, app: ASGIApp, handler: InferHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await self.handler(InferCall(match.group(1), match.group(2) or "", headers, receive, send))


async def read_body(call: InferCall, limit: int) -> bytes:
    """The whole body; BodyTooLarge (by Content-Length or as it streams in) past `limit` bytes."""
    length = call.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"request body is {length} bytes, over the limit of {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await call.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def reply(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """One complete response; JSON unless `headers` names another content-type."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if "content-type" not in headers:
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()

"""The REST side of every service: one error boundary, one bounded body reader, one bare ASGI reply."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError

from services.transportkit.errors import BodyTooLarge, ClientGone, ErrorTable, NotJson

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The whole body of an ASGI request, never more than `limit` bytes in memory."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise BodyTooLarge(int(content_length), limit, declared=True)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size, limit, declared=False)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_request_body(request: Request, limit: int) -> bytes:
    """`read_body` for a FastAPI route's request."""
    return await read_body(request.receive, request.headers.get("content-length"), limit)


def parse_json(raw: bytes) -> Any:
    """A JSON document from a caller, or NotJson. orjson, not the json module: it refuses nesting deeper
    than 1024 and integers beyond 64 bits with a parse error, where json.loads raises RecursionError or
    ValueError (4300 digits) from deep inside, which would end as a 500."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"request body is not valid JSON: {exc}") from None


async def read_json(request: Request, limit: int) -> Any:
    """A FastAPI route's JSON body ({} when empty); BodyTooLarge or NotJson otherwise (put both in the
    service's error table)."""
    raw = await read_request_body(request, limit)
    return parse_json(raw) if raw else {}


async def reply(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """One complete response; JSON unless `headers` names another content-type."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if "content-type" not in headers:
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def internal_error(exc: Exception, path: str) -> tuple[int, dict[str, str], bytes]:
    """An error no table knows: logged with its traceback (and the request id), answered 500."""
    log.error("unhandled error", exc_info=exc, extra={"path": path})
    return (
        500,
        {"content-type": "application/json"},
        json.dumps({"error": f"internal error: {type(exc).__name__}"}).encode(),
    )


def refused(table: ErrorTable, exc: Exception, path: str) -> tuple[int, dict[str, str], bytes]:
    """A domain error as its table reports it (logged at INFO where the table asks for it)."""
    status, headers, body = table.http(exc)
    if table.log_refusals:
        log.info("request refused", extra={"path": path, "status": status, "reason": str(exc)})
    return status, headers, body


def install_error_handlers(app: FastAPI, table: ErrorTable, validation_status: int | None = None) -> None:
    """The REST boundary of a FastAPI app: the table's errors by the table; anything else 500, logged.

    `validation_status`: answer FastAPI's own request validation errors with this status and
    `{"error": "invalid request", "detail": [...]}` instead of FastAPI's 422.
    """

    async def domain_error(request: Request, exc: Exception) -> Response:
        status, headers, body = refused(table, exc, request.url.path)
        return Response(body, status_code=status, headers=headers)

    for cls in table.handled:
        app.add_exception_handler(cls, domain_error)

    if validation_status is not None:

        async def bad_request(request: Request, exc: Exception) -> Response:
            errors = exc.errors() if isinstance(exc, RequestValidationError) else []
            detail = json.loads(json.dumps(errors, default=str))
            body = json.dumps({"error": "invalid request", "detail": detail}).encode()
            return Response(body, status_code=validation_status, media_type="application/json")

        app.add_exception_handler(RequestValidationError, bad_request)

    async def unexpected(request: Request, exc: Exception) -> Response:
        status, headers, body = internal_error(exc, request.url.path)
        return Response(body, status_code=status, headers=headers)

    app.add_exception_handler(Exception, unexpected)


class BoundedBody:
    """ASGI: no request body over `limit` bytes reaches `app` (413 by `errors`, whatever the route does with it).

    For the routes that let FastAPI read the body (a pydantic model as a parameter), which has no
    limit of its own. The body is read here, bounded, then handed on as one message.
    """

    def __init__(
        self, app: ASGIApp, limit: int, errors: ErrorTable, streamed: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.errors = errors
        # Routes that read their body as a stream and bound it themselves (a model upload).
        self.streamed = streamed or (lambda _path: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.streamed(scope["path"]):
            await self.app(scope, receive, send)
            return
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
        try:
            body = await read_body(receive, length, self.limit)
        except BodyTooLarge as exc:
            await reply(send, *refused(self.errors, exc, scope["path"]))
            return
        except ClientGone:
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: only a disconnect is left to hear
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

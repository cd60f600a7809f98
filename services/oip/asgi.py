"""The v2 inference route as a bare ASGI layer, for the model server and the gateway alike.

`POST /v2/models/{name}[/versions/{version}]/infer` is every REST caller's hot path. Served through
FastAPI it would pay the middleware, routing, dependency and response layers, as much CPU as the
rest of the request (`make bench-modelserver-rest`). Each service puts an `InferRoute` in front of
its FastAPI app: inference POSTs go to the service's handler, every other path goes on to FastAPI.
The route is declared here only; `document` adds it to the FastAPI app's OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI

from services.transportkit.errors import ErrorTable
from services.transportkit.rest import ASGIApp, ClientGone, Receive, Scope, Send, internal_error, reply


class InferCall:
    """One v2 inference request as the route saw it: names from the path, lower-case headers."""

    __slots__ = ("headers", "model", "receive", "send", "version")

    def __init__(self, model: str, version: str, headers: dict[str, str], receive: Receive, send: Send) -> None:
        self.model = model
        self.version = version
        self.headers = headers
        self.receive = receive
        self.send = send

    @property
    def path(self) -> str:
        version = f"/versions/{self.version}" if self.version else ""
        return f"/v2/models/{self.model}{version}/infer"


# A call → (the answer's headers, its body); a domain error of the route's table, or ClientGone.
InferHandler = Callable[[InferCall], Awaitable[tuple[dict[str, str], bytes]]]
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class InferRoute:
    """ASGI: v2 inference POSTs go to `handler`, inside the REST boundary of `errors`; everything else to `app`."""

    def __init__(self, app: ASGIApp, handler: InferHandler, errors: ErrorTable) -> None:
        self.app = app
        self.handler = handler
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        call = InferCall(match.group(1), match.group(2) or "", headers, receive, send)
        try:
            answer_headers, answer = await self.handler(call)
        except ClientGone:
            return
        except self.errors.handled as exc:
            await reply(send, *self.errors.http(exc))
        except Exception as exc:  # noqa: BLE001 - the boundary: internal_error logs it with its traceback
            await reply(send, *internal_error(exc, call.path))
        else:
            await reply(send, 200, answer_headers, answer)


def document(app: FastAPI, summary: str, description: str, example: dict[str, Any] | None = None) -> None:
    """Add the inference route to `app`'s OpenAPI document (and /docs): FastAPI never serves it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        json_body: dict[str, Any] = {"schema": {"type": "object"}}
        if example is not None:
            json_body["example"] = example
        for path, names in (
            ("/v2/models/{name}/infer", ("name",)),
            ("/v2/models/{name}/versions/{version}/infer", ("name", "version")),
        ):
            schema["paths"][path] = {
                "post": {
                    "tags": ["v2"],
                    "summary": summary,
                    "description": description,
                    "operationId": "infer_" + "_".join(names),
                    "parameters": [
                        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": json_body,
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {"200": {"description": "the outputs (JSON, or JSON + binary tensors)"}},
                }
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

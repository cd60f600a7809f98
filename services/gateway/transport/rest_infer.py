"""The v2 REST inference route, the gateway's hot path, served in front of FastAPI.

`POST /v2/models/{name}[/versions/{version}]/infer` is answered by `infer_route` (the bare ASGI
layer of services/oip/asgi.py) before FastAPI's middleware, routing, dependency and response
layers: together they cost ~0.3 ms a request on this machine, a third of the gateway's 1 ms
budget. Every other path goes on to the FastAPI app, which also declares this route for the
OpenAPI docs and serves it the same way (through `V2Infer`) if it is ever reached there. Errors
use the one status table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from services.gateway.auth import Guard, presented_key
from services.gateway.dataplane import Gateway, RestResult
from services.gateway.errors import GatewayError, InvalidInput, RequestTooLarge
from services.gateway.rest_backend import BODY_HEADERS, HEADER_LENGTH_KEY
from services.gateway.tensors import rest_document
from services.gateway.transport.observe import observe
from services.gateway.transport.status import retry_after_s, status_of
from services.oip.asgi import ASGIApp, BodyTooLarge, ClientGone, InferCall, InferRoute, error_body, read_body, reply

log = logging.getLogger(__name__)


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


def synthetic_from_header(raw: str | None) -> bool:
    """X-Flywheel-Synthetic (HTTP) or x-flywheel-synthetic (gRPC metadata): load-test traffic, which drift,
    live accuracy and training data leave out. Absent: production traffic; 400 when not a boolean."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise InvalidInput(f"X-Flywheel-Synthetic must be true or false, got {raw[:40]!r}")


def error_reply(exc: GatewayError) -> tuple[int, dict[str, str], bytes]:
    """A domain error as (HTTP status, headers, JSON body `{"error": …}`)."""
    status, _ = status_of(exc)
    headers = {"content-type": "application/json"}
    retry = retry_after_s(exc)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, headers, error_body(exc.message)


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
                name,
                version,
                body,
                forward,
                key_id,
                deadline,
                headers.get("x-flywheel-sticky-key"),
                synthetic=synthetic_from_header(headers.get("x-flywheel-synthetic")),
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


def infer_route(app: ASGIApp, infer: V2Infer, max_request_bytes: int) -> InferRoute:
    """v2 inference POSTs answered by `infer` ahead of the FastAPI `app` (services/oip/asgi.py)."""

    async def handle(call: InferCall) -> None:
        try:
            body = await read_body(call, max_request_bytes)
            result = await infer(call.model, call.version, call.headers, body)
        except ClientGone:
            return
        except BodyTooLarge as exc:
            await reply(call.send, *error_reply(RequestTooLarge(str(exc))))
        except GatewayError as exc:
            await reply(call.send, *error_reply(exc))
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"path": f"/v2/models/{call.model}/infer"})
            await reply(call.send, 500, {}, error_body(f"internal error: {type(exc).__name__}"))
        else:
            await reply(call.send, 200, V2Infer.reply_headers(result), result.answer.body)
            # After the answer went out: prediction log and shadow mirror cost the caller nothing.
            infer.gateway.after_rest(result)

    return InferRoute(app, handle)

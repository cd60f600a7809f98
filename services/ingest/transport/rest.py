"""HTTP adapter: `POST /v1/labels` (native JSON batch), `POST /webhooks/label-studio`, health.

Bodies are read with a byte limit (413 above it) and parsed here; every ingest error becomes
`{"error", "field", "reason"}` with the status from transport/status.py.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import uuid
from datetime import datetime
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.ingest.errors import InvalidInput, PayloadTooLarge, Unauthorized
from services.ingest.label_studio import parse_webhook
from services.ingest.labels import CREATED, LabelInput
from services.ingest.metrics import stage
from services.ingest.pipeline import IngestPipeline
from services.ingest.transport.status import ERRORS
from services.telemetry import Readiness, health_router, request_id_var, valid_request_id
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.rest import BodyTooLarge, NotJson, install_error_handlers, parse_json, read_request_body

log = logging.getLogger(__name__)
# Open without a service credential (it checks Label Studio's token itself); /v1/labels admits only
# trusted callers (label producers, operators: FLYWHEEL_TRUSTED_CALLERS).
PUBLIC_PATHS = ("/webhooks/label-studio",)


class NativeLabel(BaseModel):
    """One native label event. `image` is a base64 PNG; or give `features` (64 numbers in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    example_id: str
    label: str = ""
    annotator: str = ""
    image: str | None = None
    features: list[float] | None = None
    annotation_id: str = ""
    action: Literal["created", "updated", "deleted"] = CREATED
    updated_at: datetime | None = None


class NativeBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[NativeLabel] = Field(min_length=1)


def to_inputs(batch: NativeBatch, trace_id: str) -> list[LabelInput]:
    inputs = []
    for i, item in enumerate(batch.labels):
        image = None
        if item.image:
            try:
                image = base64.b64decode(item.image, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"labels[{i}].image", "is not valid base64") from None
        inputs.append(
            LabelInput(
                example_id=item.example_id,
                label=item.label,
                annotator=item.annotator,
                source="api",
                action=item.action,
                image=image,
                features=item.features,
                annotation_id=item.annotation_id,
                updated_at=item.updated_at,
                where=f"labels[{i}]",
                trace_id=trace_id,
            )
        )
    return inputs


def _pydantic_error(exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    parts: list[str] = []
    for p in err.get("loc", ()):
        if isinstance(p, int) and parts:
            parts[-1] = f"{parts[-1]}[{p}]"
        else:
            parts.append(str(p))
    return InvalidInput(".".join(parts) or "body", err["msg"])


async def read_body(request: Request, limit: int) -> bytes:
    try:
        return await read_request_body(request, limit)
    except BodyTooLarge as exc:
        raise PayloadTooLarge(exc.size, limit) from None


def _json(body: bytes) -> object:
    try:
        return parse_json(body)
    except NotJson as exc:
        raise InvalidInput("body", str(exc)) from None


def check_token(header: str | None, token: str) -> None:
    if not token:
        raise Unauthorized("the Label Studio webhook is disabled: set FLYWHEEL_INGEST_WEBHOOK_TOKEN")
    if not header:
        raise Unauthorized("missing `Authorization: Token <token>` header")
    scheme, _, given = header.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("wrong webhook token")


def build_asgi(
    pipeline: IngestPipeline,
    readiness: Readiness,
    webhook_token: str,
    max_body_bytes: int,
    max_batch: int,
    callers: TrustedCallers,
) -> CallerCheck:
    """Ingest's HTTP application behind the caller check (the webhook and health excepted)."""
    app = build_app(pipeline, readiness, webhook_token, max_body_bytes, max_batch)
    return CallerCheck(app, callers, ERRORS, PUBLIC_PATHS)


def build_app(
    pipeline: IngestPipeline, readiness: Readiness, webhook_token: str, max_body_bytes: int, max_batch: int
) -> FastAPI:
    app = FastAPI(title="flywheel ingest", version="1")
    app.include_router(health_router(readiness))

    @app.middleware("http")
    async def request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
        given = request.headers.get("x-request-id")
        rid = valid_request_id(given) or uuid.uuid4().hex
        if given and rid != given:  # it goes back in a header and into every log line: refuse, never echo
            reason = "must be 1-128 letters, digits or any of _ . : / @ + = ~ -"
            body = {"error": "InvalidInput", "field": "x-request-id", "reason": reason}
            return JSONResponse(body, status_code=400)
        token = request_id_var.set(rid)
        try:
            response = await call_next(request)
        finally:
            request_id_var.reset(token)
        response.headers["x-request-id"] = rid
        return response

    install_error_handlers(app, ERRORS)

    @app.post("/v1/labels", summary="Submit a batch of native label events")
    async def submit_labels(request: Request) -> dict:
        body = await read_body(request, max_body_bytes)
        with stage("parse"):
            try:
                batch = NativeBatch.model_validate(_json(body))
            except ValidationError as exc:
                raise _pydantic_error(exc) from None
            if len(batch.labels) > max_batch:
                raise InvalidInput("labels", f"has {len(batch.labels)} items; the limit is {max_batch}")
            inputs = to_inputs(batch, request_id_var.get())
        result = await run_in_threadpool(pipeline.submit, inputs)
        return {"accepted": len(result.event_ids), "event_ids": result.event_ids}

    @app.post("/webhooks/label-studio", summary="Label Studio webhook receiver")
    async def label_studio(request: Request) -> dict:
        check_token(request.headers.get("authorization"), webhook_token)
        body = await read_body(request, max_body_bytes)
        batch = parse_webhook(_json(body))
        result = await run_in_threadpool(pipeline.submit, batch.inputs, True)
        return {
            "action": batch.action,
            "accepted": len(result.event_ids),
            "event_ids": result.event_ids,
            "ignored": batch.ignored + [f"unknown annotation {a}" for a in result.skipped],
        }

    return app

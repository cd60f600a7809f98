"""HTTP adapter: native labels, Label Studio webhooks and imports, what ingest knows, health.

* `POST /v1/labels` — a batch of native labels (each names its project, or the batch does, or
  ingest's default project applies);
* `POST /webhooks/label-studio/{project}` (and `/webhooks/label-studio` for the default project) —
  Label Studio's webhook: labels with inline data are stored at once, those referencing data
  Label Studio stores are queued for the fetcher (the answer says how many of each);
* `POST /v1/projects/{project}/label-studio/import` — a whole Label Studio JSON export in one go;
* `GET /v1/projects` — the projects (and versions) this ingest validates against;
* `GET /v1/fetches?state=dead` — queued fetches and why a dead one failed.

Bodies are read with a byte limit (413 above it) and parsed here; every ingest error becomes
`{"error", "field", "reason"}` with the status from transport/status.py. The label routes sit on
one router, so a credential check is added in one place.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.ingest.errors import InvalidInput, PayloadTooLarge, Unauthorized
from services.ingest.fetching import FetchQueue, FetchWorker, enqueue_or_fail
from services.ingest.label_studio import WebhookBatch, parse_export, parse_webhook
from services.ingest.labels import CREATED, DELETED, LabelInput, project_of
from services.ingest.metrics import stage
from services.ingest.pipeline import IngestPipeline
from services.ingest.transport.status import ERRORS
from services.telemetry import Readiness, health_router, request_id_var, valid_request_id
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.rest import BodyTooLarge, NotJson, install_error_handlers, parse_json, read_request_body

log = logging.getLogger(__name__)
# Open without a service credential (it checks Label Studio's token itself); /v1/labels admits only
# trusted callers (label producers, operators: FLYWHEEL_TRUSTED_CALLERS).
# The webhooks carry Label Studio's own token (checked by the route), not a service credential.
PUBLIC_PATHS = ("/webhooks/label-studio", "/webhooks/label-studio/*")


class NativeLabel(BaseModel):
    """One native label event, with its input as the project's kind asks: `image` (base64 PNG, JPEG
    or WebP) or `features` (a small image's pixels in [0, 1]); `row` ({column: value}); `text`."""

    model_config = ConfigDict(extra="forbid")

    example_id: str
    project: str = ""
    label: str = ""
    annotator: str = ""
    image: str | None = None
    features: list[float] | None = None
    row: dict[str, Any] | None = None
    text: str | None = None
    annotation_id: str = ""
    action: Literal["created", "updated", "deleted"] = CREATED
    updated_at: datetime | None = None


class NativeBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = ""  # for labels that name none
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
                row=item.row,
                text=item.text,
                project=item.project or batch.project,
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
    fetch_queue: FetchQueue | None = None,
    fetch_worker: FetchWorker | None = None,
) -> CallerCheck:
    """Ingest's HTTP application behind the caller check (the webhook and health excepted)."""
    app = build_app(pipeline, readiness, webhook_token, max_body_bytes, max_batch, fetch_queue, fetch_worker)
    return CallerCheck(app, callers, ERRORS, PUBLIC_PATHS)


def build_app(
    pipeline: IngestPipeline,
    readiness: Readiness,
    webhook_token: str,
    max_body_bytes: int,
    max_batch: int,
    fetch_queue: FetchQueue | None = None,
    fetch_worker: FetchWorker | None = None,
) -> FastAPI:
    app = FastAPI(title="flywheel ingest", version="1")
    app.include_router(health_router(readiness))
    labels = APIRouter()

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

    @labels.post("/v1/labels", summary="Submit a batch of native label events")
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

    def take(batch: WebhookBatch) -> dict:
        """Store what came with its data, queue what must be fetched; deletes drop pending fetches."""
        valid = pipeline.validate(batch.inputs)
        if fetch_queue is not None:
            fetch_queue.supersede([v.record_key for v in valid if v.action == DELETED])
        queued: list[str] = []
        if batch.pending:
            if fetch_queue is None:
                raise InvalidInput("task.data", "this ingest does not fetch task data")
            keys = [pipeline.validate_one(p.input, with_input=False).record_key for p in batch.pending]
            queued = enqueue_or_fail(fetch_queue, list(zip(batch.pending, keys, strict=True)))
            if fetch_worker is not None:
                fetch_worker.wake.set()
        result = pipeline.submit_valid(valid, skip_unknown_deletes=True)
        return {
            "action": batch.action,
            "accepted": len(result.event_ids),
            "event_ids": result.event_ids,
            "queued": len(queued),
            "ignored": batch.ignored + [f"unknown annotation {a}" for a in result.skipped],
        }

    def project_named(name: str):  # type: ignore[no-untyped-def]
        return project_of(
            LabelInput(example_id="-", label="", annotator="", source="", project=name),
            pipeline.catalog,
            pipeline.default_project,
        )

    async def webhook(request: Request, project: str) -> dict:
        check_token(request.headers.get("authorization"), webhook_token)
        body = await read_body(request, max_body_bytes)
        found = project_named(project)
        batch = parse_webhook(_json(body), found)
        return await run_in_threadpool(take, batch)

    @labels.post("/webhooks/label-studio", summary="Label Studio webhook receiver (the default project)")
    async def label_studio_default(request: Request) -> dict:
        return await webhook(request, "")

    @labels.post("/webhooks/label-studio/{project}", summary="Label Studio webhook receiver for a project")
    async def label_studio(request: Request, project: str) -> dict:
        return await webhook(request, project)

    @labels.post(
        "/v1/projects/{project}/label-studio/import", summary="Import a Label Studio project's JSON export at once"
    )
    async def import_export(request: Request, project: str) -> dict:
        # An operator's command (`flywheel projects import-label-studio`), not Label Studio calling:
        # admitted by the service credential check like the other label routes.
        body = await read_body(request, max_body_bytes)
        doc = _json(body)
        found = project_named(project)
        tasks, ls_project = (doc.get("tasks"), doc.get("project")) if isinstance(doc, dict) else (doc, None)
        batch = parse_export(tasks, found, ls_project if isinstance(ls_project, dict) else None)
        if len(batch.inputs) + len(batch.pending) > max_batch:
            raise InvalidInput(
                "export",
                f"holds {len(batch.inputs) + len(batch.pending)} annotations; send at most {max_batch} at once",
            )
        return await run_in_threadpool(take, batch)

    @labels.get("/v1/projects", summary="The projects (latest versions) this ingest validates labels against")
    def projects() -> list[dict]:
        return [
            {"name": p.name, "version": p.version, "kind": p.spec.kind, "labels": list(p.spec.labels)}
            for p in pipeline.catalog.latest()
        ]

    @labels.get("/v1/fetches", summary="Queued Label Studio fetches (state: pending, done, dead, superseded)")
    def listing(state: str = "", limit: int = 100) -> list[dict]:
        if fetch_queue is None:
            return []
        if state not in ("", "pending", "done", "dead", "superseded"):
            raise InvalidInput("state", "is one of pending, done, dead, superseded")
        return [
            {
                "fetch_id": f.fetch_id,
                "project": f.project,
                "uri": f.uri,
                "state": f.state,
                "attempts": f.attempts,
                "reason": f.reason,
            }
            for f in fetch_queue.listing(state, max(1, min(limit, 1000)))
        ]

    app.include_router(labels)
    return app

"""REST adapter: each route makes one JobService/Registry call; errors go through transport/status.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from services.projects.spec import KubernetesSpec
from services.telemetry import Readiness, health_router
from services.trainer.errors import InvalidRequest
from services.trainer.external import MAX_MODEL_BYTES, ExternalDeployer
from services.trainer.jobs import JobService
from services.trainer.logs import DEFAULT_LOG_BYTES, DEFAULT_TAIL, MAX_LOG_BYTES, MAX_TAIL, LogRequest
from services.trainer.projects import ProjectRegistry
from services.trainer.registry import Registry
from services.trainer.transport.codec import job_json, version_json
from services.trainer.transport.projects_rest import projects_router
from services.trainer.transport.status import ERRORS
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.rest import BoundedBody, install_error_handlers


class SearchBody(BaseModel):
    trials: int | None = Field(None, ge=0, le=1000)
    rounds: int | None = Field(None, ge=1, le=10)


class SubmitBody(BaseModel):
    """A training job; what it leaves out comes from the project's spec (family, hyperparameters, search)."""

    model: str = ""
    project: str = ""
    snapshot_id: str = ""
    model_family: str = ""
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    search: SearchBody = Field(default_factory=SearchBody)
    budget_s: float = Field(0.0, ge=0)
    runner: str = ""
    gpus: int = Field(0, ge=0)
    combined_metric: str = ""
    kubernetes: KubernetesSpec | None = Field(
        None, description="the Kubernetes runner's block; the fields given replace the project's"
    )


class PromoteBody(BaseModel):
    stage: str
    force: bool = False


# A job is names and a few hyperparameters; a project spec may carry the user's training code
# (services.projects.spec.MAX_CODE_BYTES, 1 MiB) plus its YAML/JSON around it.
MAX_BODY = 2 << 20
LOG_PARAMS = frozenset({"tail", "max_bytes", "follow"})


def build_asgi(
    jobs: JobService,
    registry: Registry,
    readiness: Readiness,
    stop: threading.Event,
    callers: TrustedCallers,
    projects: ProjectRegistry | None = None,
    deployer: ExternalDeployer | None = None,
) -> CallerCheck:
    """The trainer's HTTP application: bodies bounded (a model upload by MAX_MODEL_BYTES, as it streams),
    every route but health for trusted callers only."""
    app = BoundedBody(
        build_app(jobs, registry, readiness, stop, projects, deployer), MAX_BODY, ERRORS, streamed=_is_model_upload
    )
    return CallerCheck(app, callers, ERRORS)


def _is_model_upload(path: str) -> bool:
    parts = path.split("/")  # "", "v1", "models", "{model}", "versions"
    return len(parts) == 5 and parts[1:3] == ["v1", "models"] and parts[4] == "versions"


def build_app(
    jobs: JobService,
    registry: Registry,
    readiness: Readiness,
    stop: threading.Event,
    projects: ProjectRegistry | None = None,
    deployer: ExternalDeployer | None = None,
) -> FastAPI:
    app = FastAPI(title="flywheel trainer", version="1")
    app.include_router(health_router(readiness))
    install_error_handlers(app, ERRORS)
    if projects is not None:
        app.include_router(projects_router(projects))

    @app.post("/v1/jobs", status_code=201)
    def submit(body: SubmitBody) -> dict:
        return job_json(
            jobs.submit(
                model=body.model,
                snapshot_id=body.snapshot_id,
                model_family=body.model_family,
                hyperparameters=body.hyperparameters,
                search_trials=body.search.trials,
                search_rounds=body.search.rounds,
                budget_s=body.budget_s,
                runner=body.runner,
                gpus=body.gpus,
                combined_metric=body.combined_metric,
                project=body.project,
                kubernetes=body.kubernetes,
            )
        )

    @app.get("/v1/jobs")
    def list_jobs(state: str | None = None) -> list[dict]:
        return [job_json(j) for j in jobs.store.list(state)]

    @app.get("/v1/jobs/{job_id}")
    def get(job_id: str) -> dict:
        return job_json(jobs.get(job_id))

    @app.get("/v1/jobs/{job_id}/watch", summary="NDJSON stream of progress until the job finishes")
    def watch(job_id: str) -> StreamingResponse:
        jobs.get(job_id)  # 404 before the stream starts

        def lines() -> Iterator[bytes]:
            for job in jobs.watch(job_id, stop):
                yield (json.dumps(job_json(job)) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get(
        "/v1/jobs/{job_id}/logs",
        summary="The job's log (its pod's, or the local worker's): the last `tail` lines, at most `max_bytes`",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def logs(
        job_id: str,
        request: Request,
        tail: int = Query(DEFAULT_TAIL, ge=1, le=MAX_TAIL, description="how many lines from the end"),
        max_bytes: int = Query(
            DEFAULT_LOG_BYTES, ge=1, le=MAX_LOG_BYTES, description="at most this many bytes; more is cut, with a marker"
        ),
        follow: bool = Query(False, description="keep streaming what the job writes, until it ends"),
    ) -> Response:
        unknown = sorted(set(request.query_params) - LOG_PARAMS)
        if unknown:
            raise InvalidRequest(f"unknown parameter(s) {unknown}; use {sorted(LOG_PARAMS)}")
        log = jobs.logs(job_id, LogRequest(tail=tail, max_bytes=max_bytes, follow=follow), stop)
        headers = {"X-Flywheel-Log-Source": log.source}
        if follow:
            return StreamingResponse(log.chunks, media_type="text/plain; charset=utf-8", headers=headers)
        body = log.read_all()
        headers["X-Flywheel-Log-Truncated"] = "true" if log.truncated else "false"
        return Response(body, media_type="text/plain; charset=utf-8", headers=headers)

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict:
        return job_json(jobs.cancel(job_id))

    @app.get("/v1/models")
    def models(model: str = "") -> list[dict]:
        return [version_json(v) for v in registry.list(model)]

    @app.post("/v1/models/{model}/versions/{version}/promote")
    def promote(model: str, version: str, body: PromoteBody) -> dict:
        return version_json(registry.promote(model, version, body.stage, body.force))

    if deployer is not None:

        @app.post(
            "/v1/models/{model}/versions",
            status_code=201,
            summary="Deploy a model trained elsewhere: the body is its ONNX file or TorchScript archive",
        )
        async def deploy(model: str, request: Request, snapshot_id: str = "", promote: str = "") -> dict:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise InvalidRequest(f"model: larger than {MAX_MODEL_BYTES} bytes")
                chunks.append(chunk)
            done = await run_in_threadpool(deployer.deploy, model, b"".join(chunks), snapshot_id, promote)
            return {**version_json(done.record), "gate": done.gate, "measured_on": done.measured_on}

    return app

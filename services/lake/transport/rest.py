"""REST adapter: each route makes one dataplane call (health, readiness and metrics included)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.lake.dataplane import LakeDataPlane
from services.lake.errors import LakeError
from services.lake.snapshots import SplitSpec
from services.lake.transport.status import status_of
from services.telemetry import Readiness, health_router


class SplitBody(BaseModel):
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    salt: str = "flywheel"


class CreateSnapshotBody(BaseModel):
    labels: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    as_of: dt.datetime | None = None
    split: SplitBody = Field(default_factory=SplitBody)
    description: str = ""


def build_app(dp: LakeDataPlane, readiness: Readiness) -> FastAPI:
    app = FastAPI(title="flywheel lake", docs_url="/docs", redoc_url=None)
    app.include_router(health_router(readiness))

    @app.exception_handler(LakeError)
    def lake_error(request: Request, exc: LakeError) -> JSONResponse:
        code, _ = status_of(exc)
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=code)

    @app.get("/v1/labels/distribution")
    def distribution() -> dict[str, int]:
        return dp.label_distribution()

    @app.get("/v1/labels/latest")
    def latest(
        example_id: Annotated[list[str] | None, Query()] = None, limit: Annotated[int, Query()] = 1000
    ) -> dict[str, Any]:
        rows, total = dp.latest_labels(example_id or [], limit)
        return {"labels": rows, "total": total}

    @app.get("/v1/features/stats")
    def feature_stats() -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in dp.feature_stats()]

    @app.get("/v1/accuracy")
    def accuracy() -> list[dict[str, Any]]:
        return [{**dataclasses.asdict(m), "accuracy": m.accuracy} for m in dp.live_accuracy()]

    @app.get("/v1/stats")
    def stats() -> list[dict[str, Any]]:
        return [dataclasses.asdict(t) for t in dp.stats()]

    @app.post("/v1/snapshots", status_code=201)
    def create(body: CreateSnapshotBody) -> dict[str, Any]:
        s = body.split
        manifest = dp.create_snapshot(
            body.labels, body.sources, body.as_of, SplitSpec(s.train, s.validation, s.test, s.salt), body.description
        )
        return {**manifest, "uri": dp.snapshot_uri(manifest["snapshot_id"])}

    @app.get("/v1/snapshots")
    def snapshots() -> list[dict[str, Any]]:
        return dp.list_snapshots()

    @app.get("/v1/snapshots/{snapshot_id}")
    def snapshot(snapshot_id: str) -> dict[str, Any]:
        return {**dp.get_snapshot(snapshot_id), "uri": dp.snapshot_uri(snapshot_id)}

    @app.get("/v1/snapshots/{base}/diff/{other}")
    def diff(base: str, other: str) -> dict[str, Any]:
        return dp.diff_snapshots(base, other)

    return app

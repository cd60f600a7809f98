"""REST adapter: each route makes one dataplane call (health, readiness and metrics included)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from services.lake.dataplane import LakeDataPlane
from services.lake.snapshots import SplitSpec
from services.lake.transport.status import ERRORS
from services.telemetry import Readiness, health_router
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.rest import BoundedBody, install_error_handlers


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
    project: str = ""  # empty: the lake's default project


MAX_BODY = 1 << 20  # a snapshot request: a few names, a time, a split


def build_asgi(dataplane: LakeDataPlane, readiness: Readiness, callers: TrustedCallers) -> CallerCheck:
    """The lake's HTTP application: bodies bounded, and every route but health for trusted callers only."""
    return CallerCheck(BoundedBody(build_app(dataplane, readiness), MAX_BODY, ERRORS), callers, ERRORS)


def build_app(dataplane: LakeDataPlane, readiness: Readiness) -> FastAPI:
    app = FastAPI(title="flywheel lake", docs_url="/docs", redoc_url=None)
    app.include_router(health_router(readiness))
    install_error_handlers(app, ERRORS)

    @app.get("/v1/labels/distribution")
    def distribution(project: str = "") -> dict[str, int]:
        return dataplane.label_distribution(project)

    @app.get("/v1/labels/latest")
    def latest(
        example_id: Annotated[list[str] | None, Query()] = None, limit: Annotated[int, Query()] = 1000
    ) -> dict[str, Any]:
        rows, total = dataplane.latest_labels(example_id or [], limit)
        return {"labels": rows, "total": total}

    @app.get("/v1/features/stats")
    def feature_stats(project: str = "") -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in dataplane.feature_stats(project)]

    @app.get("/v1/accuracy")
    def accuracy() -> list[dict[str, Any]]:
        return [{**dataclasses.asdict(m), "accuracy": m.accuracy} for m in dataplane.live_accuracy()]

    @app.get("/v1/stats")
    def stats() -> list[dict[str, Any]]:
        return [dataclasses.asdict(t) for t in dataplane.stats()]

    @app.post("/v1/snapshots", status_code=201)
    def create(body: CreateSnapshotBody) -> dict[str, Any]:
        s = body.split
        manifest = dataplane.create_snapshot(
            body.labels,
            body.sources,
            body.as_of,
            SplitSpec(s.train, s.validation, s.test, s.salt),
            body.description,
            body.project,
        )
        return {**manifest, "uri": dataplane.snapshot_uri(manifest["snapshot_id"])}

    @app.get("/v1/snapshots")
    def snapshots() -> list[dict[str, Any]]:
        return dataplane.list_snapshots()

    @app.get("/v1/snapshots/{snapshot_id}")
    def snapshot(snapshot_id: str) -> dict[str, Any]:
        return {**dataplane.get_snapshot(snapshot_id), "uri": dataplane.snapshot_uri(snapshot_id)}

    @app.get("/v1/snapshots/{base}/diff/{other}")
    def diff(base: str, other: str) -> dict[str, Any]:
        return dataplane.diff_snapshots(base, other)

    return app

"""REST routes of the project registry: one router, so a credential check is added in one place.

* `POST /v1/projects` — body: the spec as JSON (what `flywheel projects create` sends, user code
  inlined) or YAML (`Content-Type: application/yaml`); 201 with the new version, 200 when the spec
  equals the latest version; 400 lists every problem (`{"problems": ["field: reason", …]}`).
* `GET /v1/projects` — the latest version of each project.
* `GET /v1/projects/{name}` — the latest version and the list of versions.
* `GET /v1/projects/{name}/versions/{version}` — one version.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.projects import SpecInvalid, load_spec, spec_json
from services.projects.catalog import Project
from services.projects.loading import MAX_SPEC_BYTES, validate_document
from services.trainer.errors import InvalidRequest
from services.trainer.projects import ProjectRegistry


def project_json(project: Project, created: bool | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": project.name,
        "version": project.version,
        "sha256": project.sha256,
        "kind": project.spec.kind,
        "labels": list(project.spec.labels),
        "family": project.spec.family_name(),
        "spec": json.loads(spec_json(project.spec)),
    }
    if created is not None:
        doc["created"] = created
    return doc


async def _body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SPEC_BYTES:
            raise InvalidRequest(f"the spec is larger than {MAX_SPEC_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def projects_router(registry: ProjectRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1/projects", tags=["projects"])

    @router.post("", status_code=201, summary="Register a project spec (a new version when it changed)")
    async def create(request: Request) -> JSONResponse:
        body = await _body(request)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
                spec = load_spec(body)
            else:
                try:
                    doc = json.loads(body)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise SpecInvalid(
                        [f"body: not valid JSON ({exc}); send YAML with Content-Type application/yaml"]
                    ) from None
                spec = validate_document(doc)
        except SpecInvalid as exc:
            return JSONResponse({"error": "InvalidSpec", "detail": str(exc), "problems": exc.problems}, 400)
        if spec.model.code is not None and not spec.model.code.source:
            return JSONResponse(
                {
                    "error": "InvalidSpec",
                    "detail": "model.code.source is empty: the trainer cannot read your files; "
                    "`flywheel projects create -f` inlines the code for you",
                    "problems": ["model.code.source: is empty"],
                },
                400,
            )
        project, created = await run_in_threadpool(registry.create, spec)
        return JSONResponse(project_json(project, created), status_code=201 if created else 200)

    @router.get("", summary="The latest version of every project")
    def listing() -> list[dict[str, Any]]:
        return [project_json(p) for p in registry.list()]

    @router.get("/{name}", summary="A project's latest version and its version list")
    def latest(name: str) -> dict[str, Any]:
        versions = registry.versions(name)
        listed = [{"version": v.version, "sha256": v.sha256} for v in versions]
        return {**project_json(versions[-1]), "versions": listed}

    @router.get("/{name}/versions/{version}", summary="One version of a project")
    # A version is a SQL integer: a caller's 30-digit number is refused here, not overflowed there.
    def version(name: str, version: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
        return project_json(registry.get(name, version))

    return router

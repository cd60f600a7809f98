"""`/healthz`, `/readyz` and `/metrics`, the same for every service.

`/healthz` says only that the process answers.  `/readyz` runs the service's named checks
(models loaded, broker connected, database reachable) and answers 503 with the failing ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


class Readiness:
    """Named readiness checks; each returns (ok, detail) and must be quick."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def add_flag(self, name: str, flag: threading.Event, detail: str = "not yet") -> None:
        self.add(name, lambda: (flag.is_set(), "ok" if flag.is_set() else detail))

    def evaluate(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            checks = dict(self._checks)
        results: dict[str, str] = {}
        ready = True
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a failing probe means "not ready", with the reason
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results[name] = "ok" if ok else detail
            ready = ready and ok
        return ready, results


def health_router(readiness: Readiness, registry: CollectorRegistry = REGISTRY) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: every dependency is usable")
    def readyz() -> JSONResponse:
        ready, checks = readiness.evaluate()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def health_app(service: str, readiness: Readiness, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    """A small app with only the health routes, for services whose main work is a consume loop."""
    app = FastAPI(title=f"flywheel {service}", docs_url=None, redoc_url=None)
    app.include_router(health_router(readiness, registry))
    return app

"""The monitor's HTTP API: health, readiness and metrics, plus what the retrain policy decided."""

from __future__ import annotations

import dataclasses

from fastapi import FastAPI

from services.monitor.monitor import Monitor
from services.telemetry import Readiness, health_app
from services.transportkit.auth import CallerCheck, TrustedCallers
from services.transportkit.errors import ErrorTable

ERRORS = ErrorTable({})  # the monitor's API raises nothing of its own: the kit's errors only


def monitor_asgi(monitor: Monitor, readiness: Readiness, callers: TrustedCallers) -> CallerCheck:
    """The monitor's HTTP application: every route but health, readiness and metrics for trusted callers only."""
    return CallerCheck(monitor_app(monitor, readiness), callers, ERRORS)


def monitor_app(monitor: Monitor, readiness: Readiness) -> FastAPI:
    app = health_app("monitor", readiness)

    @app.get("/v1/retraining", summary="Per model version: TrainRequests sent and suppressed, with the last reason")
    def retraining() -> list[dict]:
        return [dataclasses.asdict(s) for s in monitor.policy.status()]

    return app

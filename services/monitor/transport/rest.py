"""The monitor's HTTP API: health, readiness and metrics, plus what the retrain policy decided."""

from __future__ import annotations

import dataclasses

from fastapi import FastAPI

from services.monitor.monitor import Monitor
from services.telemetry import Readiness, health_app


def monitor_app(monitor: Monitor, readiness: Readiness) -> FastAPI:
    app = health_app("monitor", readiness)

    @app.get("/v1/retraining", summary="Per model version: TrainRequests sent and suppressed, with the last reason")
    def retraining() -> list[dict]:
        return [dataclasses.asdict(s) for s in monitor.policy.status()]

    return app

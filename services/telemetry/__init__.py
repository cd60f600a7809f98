"""Logs, health endpoints, metrics and graceful shutdown shared by every service."""

from services.telemetry.health import Readiness, health_app, health_router
from services.telemetry.logs import configure_logging, get_logger, request_id_var
from services.telemetry.serving import serve_http_in_thread
from services.telemetry.shutdown import StopSignal

__all__ = [
    "Readiness",
    "StopSignal",
    "configure_logging",
    "get_logger",
    "health_app",
    "health_router",
    "request_id_var",
    "serve_http_in_thread",
]

"""Logs, health endpoints, metrics and graceful shutdown shared by every service."""

from services.telemetry.health import Readiness, health_app, health_router
from services.telemetry.logs import REQUEST_ID, configure_logging, get_logger, request_id_var, valid_request_id
from services.telemetry.serving import serve_http_in_thread
from services.telemetry.shutdown import StopSignal

__all__ = [
    "REQUEST_ID",
    "Readiness",
    "StopSignal",
    "configure_logging",
    "get_logger",
    "health_app",
    "health_router",
    "request_id_var",
    "serve_http_in_thread",
    "valid_request_id",
]

"""Structured JSON logs: one object a line, with the service, a request or event id, and fields.

Usage: `log.info("model loaded", extra={"model": name, "version": v})`.  Fields passed in
`extra` become top-level JSON keys; `request_id_var` carries the id across awaits and threads
that copy the context.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# What a caller's request id may be: it travels on in headers and into logs, so a short plain token.
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:/@+=~-]{1,128}")


def valid_request_id(raw: str | None) -> str:
    """`raw` when it is a well-formed request id, else "" (log lines never carry a caller's raw bytes)."""
    return raw if raw and REQUEST_ID.fullmatch(raw) else ""


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_SECRET_KEYS = ("authorization", "api_key", "apikey", "password", "secret", "token")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            payload["request_id"] = rid
        for key, value in record.__dict__.items():
            if key in _RESERVED or key.startswith("_"):
                continue
            # Never log a secret, even when a caller passes one by mistake.
            payload[key] = "***" if any(s in key.lower() for s in _SECRET_KEYS) else value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON; call once from a service's `__main__`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "uvicorn.access", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)

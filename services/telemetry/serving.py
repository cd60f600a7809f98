"""Run an ASGI app with uvicorn in a background thread and stop it cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn

from services.transportkit.listener import http_listener


class HttpServer:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def serve_http_in_thread(
    app: object, host: str, port: int, *, ready_timeout_s: float = 15.0, ssl: Mapping[str, Any] | None = None
) -> HttpServer:
    """Start uvicorn on host:port (0 = a free port) in a thread of its own (which catches no signal:
    the service's own StopSignal owns SIGTERM). `ssl`: uvicorn's TLS options (transportkit.tls)."""
    sock = http_listener(host, port)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", **(ssl or {}))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    waiter = threading.Event()
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        waiter.wait(0.02)
    if not server.started:
        raise RuntimeError(f"HTTP server on {host}:{port} did not start")
    return HttpServer(server, thread)

"""Run an ASGI app with uvicorn in a background thread and stop it cleanly."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


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


def serve_http_in_thread(app: object, host: str, port: int, *, ready_timeout_s: float = 15.0) -> HttpServer:
    """Start uvicorn on host:port (0 = a free port) without installing signal handlers.

    The service's own StopSignal owns SIGTERM; uvicorn would otherwise swallow it.
    """
    # IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    waiter = threading.Event()
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        waiter.wait(0.02)
    if not server.started:
        raise RuntimeError(f"HTTP server on {host}:{port} did not start")
    return HttpServer(server, thread)

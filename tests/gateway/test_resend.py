"""The gateway's hop re-sends a request once when its kept-alive connection closed before any byte of an answer.

The pool runs in this process so that the race is made on purpose: the model server is killed and
another one started on the same port while the event loop is blocked, so the pool still holds the
dead server's connection as open and writes the next request on it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest

from services.gateway import http1
from services.gateway.http1 import Http1Pool, NotReached
from tests.gateway.conftest import _stop, spawn_modelserver
from tests.gateway.models import MODEL
from tests.support.credentials import operator, service_env

BODY = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}).encode()
TARGET = f"/v2/models/{MODEL}/infer"


def test_a_model_server_restarted_between_requests_costs_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replacement takes seconds to load, longer than the pool keeps an idle connection.
    monkeypatch.setattr(http1, "KEEPALIVE_S", 120.0)
    service_env("modelserver")
    first, server = spawn_modelserver(tmp_path / "first")
    addr = server.http_url.removeprefix("http://")
    headers = {**operator(), "content-type": "application/json"}
    resent: list[int] = []
    procs = [first]

    async def scenario() -> list[int]:
        pool = Http1Pool(addr, on_resend=lambda: resent.append(1))
        statuses = []
        try:
            for round_ in range(3):
                statuses.append((await pool.send("POST", TARGET, BODY, headers, 30))[0])
                # Blocking on purpose (no await): the pool's idle connection is never seen to close.
                procs[-1].kill()
                procs[-1].wait()
                procs.append(spawn_modelserver(tmp_path / f"next{round_}", int(addr.rpartition(":")[2]))[0])
            statuses.append((await pool.send("POST", TARGET, BODY, headers, 30))[0])
        finally:
            await pool.close()
        return statuses

    try:
        statuses = asyncio.run(scenario())
    finally:
        for proc in procs:
            if proc.poll() is None:
                _stop(proc, "modelserver")
    assert statuses == [200] * 4, statuses
    assert len(resent) == 3


class PartialAnswer:
    """A TCP peer that answers the first request in full and the second with half a body, then closes.

    A fake: no real server can be made to stop in the middle of an answer on cue."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests += 1
                    if self.requests == 1:
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    else:
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                        break

    def close(self) -> None:
        self.listener.close()


def test_a_connection_that_closes_after_answer_bytes_is_never_sent_again() -> None:
    peer = PartialAnswer()
    resent: list[int] = []

    async def scenario() -> None:
        pool = Http1Pool(f"127.0.0.1:{peer.port}", on_resend=lambda: resent.append(1))
        try:
            assert (await pool.send("POST", "/x", b"{}", {}, 5))[0] == 200
            with pytest.raises(NotReached):
                await pool.send("POST", "/x", b"{}", {}, 5)
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        peer.close()
    assert peer.requests == 2 and not resent

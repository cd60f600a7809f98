"""What an HTTP or gRPC client library will not send: raw bytes on a socket, streams that go quiet."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

from services.genproto.flywheel.v1 import events_pb2 as ev


def raw_http(base_url: str, head: bytes, body: bytes = b"", timeout_s: float = 10.0) -> int | None:
    """Send `head` (request line and headers, without the blank line) and `body` as they are; the answer's
    status, or None when none came within `timeout_s`."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(head + b"\r\n" + body)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            return None
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A request head with a Host header and a Content-Length that matches `body` (unless given)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    given = {k.lower() for k in (headers or {})}
    if "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class QuietStream:
    """A client stream of labels that sends `first` labels, then goes quiet until released (or `max_s`)."""

    def __init__(self, prefix: str, first: int = 1, max_s: float = 60.0) -> None:
        self._prefix = prefix
        self._first = first
        self._max_s = max_s
        self.release = threading.Event()

    def __iter__(self) -> Iterator[ev.RawLabel]:
        from tests.ingest.conftest import digit_png

        for i in range(self._first):
            yield ev.RawLabel(example_id=f"{self._prefix}-{i}", label="1", annotator="a", data=digit_png(i))
        self.release.wait(self._max_s)

"""A small keep-alive HTTP/1.1 client on httptools (the parser uvicorn uses): the gateway's hop to the model server.

It speaks only what that hop needs: GET/POST, Content-Length bodies out, any framing back, one
request per connection at a time, a pool of idle connections dropped before the server's own
keep-alive timeout would. Why not aiohttp or httpx: see `make bench-gateway-hop` and the gateway README.

It writes protocol bytes, so it trusts no string it is given: the request line and every header
must be printable ASCII without CR, LF or other control characters, or the request is refused
before a byte is sent (`UnsafeHeader`). Callers validate what they put there; this is the last line.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Callable

import httptools

# A replica's address can outlive its pod in DNS answers (CoreDNS caches them for up to 30 s): a
# connect to it then hangs rather than being refused. Not open by this, the address counts as not
# reached (ejected, the retry goes to another) instead of using up the request's whole deadline; a
# connect inside a cluster takes well under a millisecond.
CONNECT_TIMEOUT_S = 0.5
# Below uvicorn's 5 s keep-alive, so the gateway drops an idle connection before the server does.
KEEPALIVE_S = 4.0
# A header name is an RFC 9110 token; a value is visible ASCII with inner spaces; a target has no space.
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?|")
_TARGET = re.compile(r"/[\x21-\x7e]*")

Answer = tuple[int, dict[str, str], bytes]


class NotReached(Exception):
    """The request got no HTTP answer (refused, reset, closed): safe to retry."""


class UnsafeHeader(ValueError):
    """A request line or header would carry CR, LF, a control character or non-ASCII: never sent."""


def request_head(method: str, target: str, host: str, body_length: int, headers: dict[str, str]) -> bytes:
    """The request line and headers, each checked, as the bytes that go on the wire."""
    if not _TARGET.fullmatch(target):
        raise UnsafeHeader(f"request target {target!r} is not printable ASCII without spaces")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {body_length}\r\n"]
    for name, value in headers.items():
        if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            raise UnsafeHeader(f"header {name!r}: {value!r} is not a visible ASCII value")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("ascii")


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, max_response_bytes: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max = max_response_bytes
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self.open = False
        self.received = False  # a byte of the answer to the current request has arrived

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.open = True
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small request and answer writes must not wait for ACKs (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(NotReached(f"connection closed{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NotReached(f"unreadable HTTP answer: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max:
            self._fail(NotReached(f"answer over {self._max} bytes"))
            self.close()
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        status, headers, body = self._parser.get_status_code(), self._headers, b"".join(self._body)
        self._headers, self._body, self._size = {}, [], 0
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, headers, body))

    # requests
    async def request(self, head: bytes, body: bytes) -> Answer:
        if self._transport is None or self._waiter is not None:
            raise NotReached("connection not ready for a request")
        self._waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self._transport.writelines((head, body))
        return await self._waiter

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Http1Pool:
    """Keep-alive connections to one host:port; `send` takes one, or opens one, for each request."""

    def __init__(
        self,
        addr: str,
        max_response_bytes: int = 64 << 20,
        tls: ssl.SSLContext | None = None,
        connect_addr: str | None = None,
        on_resend: Callable[[], None] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        """`tls`: talk TLS, verifying the server with this context (None: plaintext); `connect_addr`:
        the IP:port to connect to when it is not `addr` (one replica behind a name: `Host` and the TLS
        server name stay `addr`'s host); `on_resend`: called for each request sent again (see `send`);
        `connect_timeout_s`: a connection not open by then is NotReached (see CONNECT_TIMEOUT_S)."""
        if not _VALUE.fullmatch(addr):
            raise UnsafeHeader(f"address {addr!r} is not a visible ASCII host:port")
        host, _, port = addr.rpartition(":")
        self._host, self._port = host.strip("[]") or "127.0.0.1", int(port)
        self._server_name = self._host
        if connect_addr is not None:
            chost, _, cport = connect_addr.rpartition(":")
            self._host, self._port = chost.strip("[]"), int(cport)
        self._closed = False
        self._host_header = addr
        self._max_response = max_response_bytes
        self._tls = tls
        self._idle: list[tuple[float, _Connection]] = []
        self._on_resend = on_resend
        self._connect_timeout_s = connect_timeout_s

    async def _connection(self) -> tuple[_Connection, bool]:
        """A connection for one request, and whether it is a kept-alive one (used before)."""
        now = time.monotonic()
        while self._idle:
            since, conn = self._idle.pop()
            if conn.open and now - since < KEEPALIVE_S:
                return conn, True
            conn.close()
        return await self._open(), False

    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self._max_response),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._server_name if self._tls is not None else None,
                )
        except TimeoutError:
            # Only this block's own limit lands here: the request's deadline (the caller's timeout
            # around it) cancels this task instead, and stays a TimeoutError out there.
            raise NotReached(f"no connection within {self._connect_timeout_s:g} s") from None
        except OSError as exc:
            raise NotReached(str(exc) or type(exc).__name__) from None
        return conn

    async def send(self, method: str, target: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Answer:
        """(status, lower-case headers, body); NotReached, UnsafeHeader or TimeoutError otherwise.

        A kept-alive connection the server closed as the request went out (a server draining or
        restarting closes idle ones; the close crosses the request on the wire) fails with no byte of
        an answer: the server did not take the request, so it goes once more on a new connection. Never
        after a byte arrived (the server took it), never twice, never for a connection just opened.
        """
        head = request_head(method, target, self._host_header, len(body), headers)
        async with asyncio.timeout(timeout_s):
            conn, reused = await self._connection()
            try:
                answer = await conn.request(head, body)
            except NotReached:
                conn.close()
                if not reused or conn.received:
                    raise
                if self._on_resend is not None:
                    self._on_resend()
                conn = await self._open()
                try:
                    answer = await conn.request(head, body)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                conn.close()  # an answer may still come on it: never reuse
                raise
        if conn.open and not self._closed:
            self._idle.append((time.monotonic(), conn))
        else:
            conn.close()  # a closed pool (an address that left) keeps nothing
        return answer

    async def close(self) -> None:
        self._closed = True
        for _, conn in self._idle:
            conn.close()
        self._idle.clear()

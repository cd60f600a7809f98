"""The REST listener turns Nagle off on every connection (no ~40 ms stall between headers and body).

uvicorn writes a response's headers and body separately; with Nagle on, the body waited for the
client's delayed ACK. These check the socket option itself, never a time.
"""

from __future__ import annotations

import asyncio
import socket

from services.transportkit.listener import http_listener


def test_listener_is_tcp_with_nodelay() -> None:
    sock = http_listener("127.0.0.1", 0)
    with sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockname()[1] != 0


def test_accepted_connections_have_nodelay() -> None:
    """Served the way uvicorn serves `sockets=[...]`: loop.create_server(sock=...)."""

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[tuple[int, int]] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                accepted.set_result((conn.proto, conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
                transport.close()

        sock = http_listener("127.0.0.1", 0)
        server = await loop.create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    proto, nodelay = asyncio.run(scenario())
    assert proto == socket.IPPROTO_TCP
    assert nodelay == 1

"""The HTTP listening socket handed to uvicorn (`sockets=[...]`) by every service, so responses are not held back.

uvicorn writes a response's headers and its body as two separate writes. On a TCP connection
with Nagle's algorithm on, the second small write waits until the first is acknowledged, and the
client delays that ACK (on Linux, by up to 40 ms): every REST response waited for it.

asyncio turns Nagle off (TCP_NODELAY) on each accepted connection only when the listening socket
says proto == IPPROTO_TCP (`asyncio.base_events._set_nodelay`); `socket.socket(AF_INET,
SOCK_STREAM)` leaves proto 0, so it never did. Here the socket is made with IPPROTO_TCP, and
TCP_NODELAY is also set on the listener itself, which accepted connections inherit on Linux,
so it holds whatever event loop serves it.
"""

from __future__ import annotations

import socket


def http_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (0 = a free port), not yet listening; uvicorn calls listen()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock

"""The transport kit every service's adapters share: one error table, the gRPC boundary on a real
thread-pool server (unary and streaming), the bounded body reader."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from services.transportkit.errors import BAD_REQUEST, INTERNAL, NOT_FOUND, ErrorTable, Status, named_body
from services.transportkit.grpc import guarded
from services.transportkit.looplag import LoopLag
from services.transportkit.rest import BodyTooLarge, ClientGone, read_body


class DomainError(Exception):
    pass


class Missing(DomainError):
    pass


class Busy(DomainError):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Gone(Missing):
    pass


TABLE = ErrorTable(
    {DomainError: INTERNAL, Missing: NOT_FOUND, Busy: Status(429, grpc.StatusCode.RESOURCE_EXHAUSTED)},
    headers={Missing: {"X-Hint": "look elsewhere"}},
)


def test_error_table_reads_the_class_hierarchy() -> None:
    assert TABLE.status(Gone("x")) == NOT_FOUND  # a subclass inherits its parent's row
    assert TABLE.status(DomainError("x")) == INTERNAL
    assert TABLE.status(ValueError("x")) == INTERNAL  # no domain error: the boundary's 500
    status, headers, body = TABLE.http(Busy("queue full", 0.0042))
    assert status == 429 and json.loads(body) == {"error": "queue full"}
    assert headers["Retry-After"] == "1" and headers["Retry-After-Ms"] == "5"
    assert TABLE.grpc_trailers(Busy("queue full", 0.0042)) == (("retry-after-ms", "5"),)
    assert TABLE.http(Gone("no"))[1]["X-Hint"] == "look elsewhere"
    assert "Retry-After" not in TABLE.http(Gone("no"))[1]
    named = ErrorTable({DomainError: BAD_REQUEST}, body=named_body)
    assert json.loads(named.http(Gone("no such thing"))[2]) == {"error": "Gone", "detail": "no such thing"}


class Servicer:
    @guarded(TABLE)
    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"missing":
            raise Gone("no such thing")
        if request == b"busy":
            raise Busy("queue full", 0.25)
        if request == b"bug":
            raise KeyError("oops")
        return b"ok:" + request

    @guarded(TABLE)
    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        if request == b"missing":
            raise Gone("gone mid-stream")
        yield b"second"


def test_grpc_boundary_maps_domain_errors_and_hides_bugs() -> None:
    servicer = Servicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("kit.Test", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/kit.Test/Unary")
            assert unary(b"x", timeout=10) == b"ok:x"
            with pytest.raises(grpc.RpcError) as info:
                unary(b"missing", timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == "no such thing"
            with pytest.raises(grpc.RpcError) as info:
                unary(b"busy", timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ("retry-after-ms", "250") in tuple(info.value.trailing_metadata() or ())
            with pytest.raises(grpc.RpcError) as info:
                unary(b"bug", timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL and "oops" not in (info.value.details() or "")

            stream = channel.unary_stream("/kit.Test/Stream")
            assert list(stream(b"x", timeout=10)) == [b"first", b"second"]
            got: list[bytes] = []
            with pytest.raises(grpc.RpcError) as info:
                got.extend(stream(b"missing", timeout=10))
            assert got == [b"first"] and info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(0)


def _receiver(messages: list[dict[str, Any]]) -> Any:
    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_body_reader_is_bounded_whether_or_not_the_length_is_declared() -> None:
    async def scenario() -> None:
        chunks = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]
        assert await read_body(_receiver(list(chunks)), "3", 3) == b"abc"
        with pytest.raises(BodyTooLarge, match="10 bytes, over the limit of 3"):
            await read_body(_receiver(list(chunks)), "10", 3)  # refused before a byte is read
        with pytest.raises(BodyTooLarge, match="over the limit of 2"):
            await read_body(_receiver(list(chunks)), None, 2)  # an undeclared length counted as it streams
        with pytest.raises(ClientGone):
            await read_body(_receiver([{"type": "http.disconnect"}]), None, 2)

    asyncio.run(scenario())


def test_loop_lag_is_behind_only_while_the_loop_stays_late() -> None:
    """One stall (a collection, a slow batch) is one late probe and refuses nothing; a loop that stays busy
    past the limit is behind until it catches up."""

    async def scenario() -> list[tuple[str, bool]]:
        loop = asyncio.get_running_loop()
        lag = LoopLag(limit_s=0.05, interval_s=0.005, sustain=3)
        lag.start()
        seen: list[tuple[str, bool]] = []
        await asyncio.sleep(0.05)
        seen.append(("idle", lag.behind))
        time.sleep(0.3)  # a single stall
        await asyncio.sleep(0.001)  # the late probe (due first) runs before this wakes
        seen.append(("probe ran late", lag.lag_s > 0.1))
        seen.append(("after one stall", lag.behind))
        busy_until = loop.time() + 0.6
        behind_seen = False

        def busy() -> None:  # always a callback ready: every probe runs a slice late
            nonlocal behind_seen
            time.sleep(0.08)
            behind_seen = behind_seen or lag.behind
            if loop.time() < busy_until:
                loop.call_soon(busy)

        loop.call_soon(busy)
        await asyncio.sleep(0.7)
        seen.append(("while busy", behind_seen))
        await asyncio.sleep(0.1)
        seen.append(("caught up", lag.behind))
        lag.stop()
        return seen

    assert asyncio.run(scenario()) == [
        ("idle", False),
        ("probe ran late", True),
        ("after one stall", False),
        ("while busy", True),
        ("caught up", False),
    ]
    assert not LoopLag(limit_s=0).behind  # 0: never probes, never behind

"""The compiled gRPC front: HTTP/2 and gRPC framing on a Rust thread (services/modelserver/grpcfront),
the calls run here through the same Dispatch as the grpc.aio front.

The Rust thread queues each call's message bytes and writes one byte to a pipe when the queue goes from
empty to not; the loop wakes on that pipe, takes every queued call at once and starts them, and the
answers of one loop iteration go back in one `respond`. Per request that leaves the parse, the servicer
and the serialize in Python: no HTTP/2, no grpc core, no per-call wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from types import ModuleType
from typing import Any

import grpc

from services.config import ConfigError
from services.modelserver.transport.dispatch import Abort, Dispatch, FrontContext

log = logging.getLogger(__name__)

MODULE = "services.modelserver._grpcfront"
_OK = grpc.StatusCode.OK.value[0]
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
Reply = tuple[int, int, str, bytes | None, tuple[tuple[str, str], ...]]


def compiled_module() -> ModuleType | None:
    """The built extension, or None when `make grpcfront` has not built it."""
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        return None


def choose_front(setting: str, tls: bool) -> str:
    """`auto|compiled|aio` → the front to run; ConfigError when `compiled` cannot run here."""
    built = compiled_module() is not None
    if setting == "aio" or (setting == "auto" and (tls or not built)):
        return "aio"
    if tls:
        raise ConfigError(
            "invalid configuration:\n  FLYWHEEL_MODELSERVER_GRPC_FRONT=compiled: the compiled front serves no TLS; "
            "use aio (or auto) when FLYWHEEL_TLS_CERT_FILE is set"
        )
    if not built:
        raise ConfigError(
            "invalid configuration:\n  FLYWHEEL_MODELSERVER_GRPC_FRONT=compiled: the compiled gRPC front is not "
            f"built ({MODULE} does not import): run `make grpcfront` (needs cargo), or use auto/aio"
        )
    return "compiled"


class CompiledFront:
    """Serves `dispatch` on host:port from the moment it is made; `stop` drains it."""

    def __init__(self, dispatch: Dispatch, host: str, port: int, max_message_bytes: int) -> None:
        module = compiled_module()
        if module is None:
            raise RuntimeError(f"{MODULE} is not built: run `make grpcfront`")
        self._dispatch = dispatch
        self._loop = asyncio.get_running_loop()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            self._front: Any = module.Front(host, port, self._wake_w, max_message_bytes, max_message_bytes)
        except OSError:
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._outbox: list[Reply] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop.add_reader(self._wake_r, self._take)

    @property
    def port(self) -> int:
        return int(self._front.port)

    def _take(self) -> None:
        # The pipe first, then the queue: a call queued after this read writes the pipe again.
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        for call_id, path, authorization, timeout_s, raw in self._front.take():
            method = self._dispatch.method(path)
            if method is None:
                self._answer((call_id, _UNIMPLEMENTED, "Method not found!", None, ()))
                continue
            context = FrontContext(authorization, timeout_s)
            task = self._loop.create_task(self._run(call_id, method, raw, context))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if timeout_s is not None:
                # The same hard deadline grpc.aio keeps: the work stops when the caller stops waiting.
                timer = self._loop.call_later(timeout_s, self._expire, task, context)
                task.add_done_callback(lambda _, timer=timer: timer.cancel())

    @staticmethod
    def _expire(task: asyncio.Task[None], context: FrontContext) -> None:
        context.expired = True
        task.cancel()

    async def _run(self, call_id: int, method: Any, raw: bytes, context: FrontContext) -> None:
        try:
            answer = await self._dispatch.call(method, raw, context)
            reply: Reply = (call_id, _OK, "", answer, context.trailers)
        except Abort as exc:
            reply = (call_id, exc.code.value[0], exc.details, None, context.trailers)
        except asyncio.CancelledError:
            reply = (
                (call_id, _DEADLINE, "Deadline Exceeded", None, ())
                if context.expired
                else (call_id, _UNAVAILABLE, "the server is shutting down", None, ())
            )
        except Exception:
            log.exception("unhandled error", extra={"rpc": "compiled front"})
            reply = (call_id, _INTERNAL, "internal error", None, ())
        self._answer(reply)

    def _answer(self, reply: Reply) -> None:
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(reply)

    def _flush(self) -> None:
        replies, self._outbox = self._outbox, []
        self._front.respond(replies)

    async def stop(self, grace_s: float) -> None:
        """No new connections, GOAWAY to open ones; their calls get up to `grace_s` to finish. The loop
        keeps taking and answering calls meanwhile (some may still be on their way in)."""
        self._front.stop()
        await asyncio.to_thread(self._front.close, grace_s)
        self._loop.remove_reader(self._wake_r)
        for task in set(self._tasks):  # their connections are gone: nobody is waiting for them
            task.cancel()
        self._outbox.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

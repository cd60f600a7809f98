"""The pieces of a service's `__main__`: its argument parser, its event loop, uvicorn on our own socket.

`__main__` alone reads the environment and builds objects; these only spare each service the
same dozen lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import uvicorn
from pydantic_settings import BaseSettings

from services.config import describe_settings


def service_parser(prog: str, description: str, *settings: type[BaseSettings]) -> argparse.ArgumentParser:
    """`python -m services.X --help`: the description, the flags the caller adds, then every env var."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=describe_settings(*settings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as settings overrides (an absent flag leaves the environment's value)."""
    return {k: v for k, v in vars(args).items() if v is not None}


def run(main: Callable[[], Coroutine[Any, Any, int]], event_loop: Literal["uvloop", "asyncio"]) -> int:
    """Run an asyncio service to its exit status on the chosen event loop."""
    loop_factory = None
    if event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def uvicorn_server(app: object, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn serving `app` on `sock` (see listener.py) in the running loop; `server.should_exit = True`
    stops it. The service's StopSignal owns SIGTERM, so uvicorn captures no signal."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    return server, asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))

"""The pieces of a service's `__main__`: its argument parser, its event loop, uvicorn on our own socket.

`__main__` alone reads the environment and builds objects; these only spare each service the
same dozen lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import uvicorn
from pydantic_settings import BaseSettings

from services.config import CommonSettings, ConfigError, describe_settings, load_settings
from services.telemetry import StopSignal, configure_logging
from services.transportkit.auth import TrustedCallers, check_token
from services.transportkit.tls import Tls

S = TypeVar("S", bound=BaseSettings)


def service_parser(
    service: str, doc: str | None, settings: type[BaseSettings], host: bool = False
) -> argparse.ArgumentParser:
    """`python -m services.<service> --help`: the first paragraph of `doc` (the `__main__` module's
    docstring), the listening flags every service has (`--host` where asked), the flags the caller
    adds, then every env var (the service's, the shared ones). Name a flag after its setting, so
    that `given(args)` are settings overrides."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{service}",
        description=textwrap.fill(" ".join((doc or "").split("\n\n")[0].split()), 100),
        epilog=describe_settings(settings, CommonSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prefix = str(settings.model_config.get("env_prefix", ""))
    if host:
        parser.add_argument("--host", help=f"address to bind (overrides {prefix}HOST)")
    for name in ("http", "grpc"):
        parser.add_argument(
            f"--{name}-port",
            type=int,
            help=f"{name.upper()} port, 0 = a free one (overrides {prefix}{name.upper()}_PORT)",
        )
    return parser


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as settings overrides (an absent flag leaves the environment's value)."""
    return {k: v for k, v in vars(args).items() if v is not None}


def start(service: str, settings_cls: type[S], args: argparse.Namespace) -> tuple[S, CommonSettings, StopSignal]:
    """Settings (the environment, then the flags given; a bad value stops here naming it), JSON logs, and
    the stop signal that SIGTERM sets."""
    settings = load_settings(settings_cls, **given(args))
    common = load_settings(CommonSettings)
    configure_logging(service, common.log_level)
    return settings, common, StopSignal().install()


@dataclass(frozen=True)
class Security:
    """Who may call this service (callers), what it presents when it calls others (token), and TLS."""

    callers: TrustedCallers
    token: str
    tls: Tls


def security(common: CommonSettings) -> Security:
    """The shared security settings, checked: ConfigError naming the variable before any socket opens."""
    try:
        callers = TrustedCallers.parse(common.trusted_callers)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  FLYWHEEL_TRUSTED_CALLERS: {exc}") from None
    try:
        token = check_token(common.service_token) if common.service_token else ""
        tls = Tls(common.tls_cert_file, common.tls_key_file, common.tls_ca_file).check()
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
    return Security(callers, token, tls)


def run(main: Callable[[], Coroutine[Any, Any, int]], event_loop: Literal["uvloop", "asyncio"]) -> int:
    """Run an asyncio service to its exit status on the chosen event loop."""
    loop_factory = None
    if event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def uvicorn_server(
    app: object, sock: socket.socket, tls: Tls | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn serving `app` on `sock` (see listener.py) in the running loop, over TLS when `tls` serves;
    `server.should_exit = True` stops it. The service's StopSignal owns SIGTERM, so uvicorn captures no signal."""
    options = tls.uvicorn_options() if tls is not None else {}
    # proxy_headers off: no service reads the client's address, and uvicorn's default wraps every request in a
    # middleware that parses X-Forwarded-* whenever the peer is 127.0.0.1 (a sidecar, a local gateway).
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=False, **options))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    return server, asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))

"""The services the local runner knows, in start order, and how each is configured.

Later issues add a service by appending one ServiceSpec: the runner starts every service
whose package has a `__main__` module and skips the others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StackContext:
    """What a service needs to know about the running stack to configure itself."""

    home: Path
    kafka_bootstrap: str
    ports: dict[str, dict[str, int]]  # service -> role -> port

    def addr(self, service: str, role: str) -> str:
        return f"127.0.0.1:{self.ports[service][role]}"


EnvBuilder = Callable[[StackContext], dict[str, str]]
DEFAULT_PROJECTS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "project.yaml"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # role -> default port; "http" is the one with /healthz, /readyz and /metrics.
    ports: dict[str, int]
    env: EnvBuilder = field(default=lambda ctx: {})
    ready_timeout_s: float = 60.0
    # Who may call its internal routes (credentials.py's identities), and who it is when it calls others.
    callers: tuple[str, ...] = ("operator",)
    identity: str = ""

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"FLYWHEEL_{self.name.upper()}_"

    def exists(self) -> bool:
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False


SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        "modelserver",
        {"http": 8000, "grpc": 8001},
        env=lambda ctx: {
            "FLYWHEEL_MODELSERVER_MODEL_REPOSITORY": str((ctx.home / "models").resolve()),
            "FLYWHEEL_MODELSERVER_CONSUME_MODEL_EVENTS": "true",
        },
        callers=("gateway", "operator"),
    ),
    ServiceSpec("ingest", {"http": 8100, "grpc": 8101}, callers=("labeler", "operator")),
    ServiceSpec("lake", {"http": 8200, "grpc": 8201}, callers=("trainer", "operator")),
    ServiceSpec(
        "trainer",
        {"http": 8300, "grpc": 8301},
        env=lambda ctx: {
            "FLYWHEEL_TRAINER_MODEL_REPOSITORY": str((ctx.home / "models").resolve()),
            # The default project: digits stays what a fresh stack knows (more: `flywheel projects create`).
            "FLYWHEEL_TRAINER_PROJECT_FILES": str(DEFAULT_PROJECTS),
            **({"FLYWHEEL_TRAINER_LAKE_ADDR": ctx.addr("lake", "grpc")} if "lake" in ctx.ports else {}),
        },
        identity="trainer",
    ),
    ServiceSpec(
        "gateway",
        {"http": 8080, "grpc": 8081},
        env=lambda ctx: {
            "FLYWHEEL_GATEWAY_MODEL_REPOSITORY": str((ctx.home / "models").resolve()),
            **(
                {"FLYWHEEL_GATEWAY_MODELSERVER_HTTP_ADDR": ctx.addr("modelserver", "http")}
                if "modelserver" in ctx.ports
                else {}
            ),
        },
        callers=(),  # its routes are public: API keys are their credential
        identity="gateway",
    ),
    ServiceSpec(
        "monitor",
        {"http": 8400},
        env=lambda ctx: {"FLYWHEEL_MONITOR_MODEL_REPOSITORY": str((ctx.home / "models").resolve())},
    ),
]


def available_services() -> list[ServiceSpec]:
    return [s for s in SERVICES if s.exists()]


def spec(name: str) -> ServiceSpec:
    """The spec of one service by name (KeyError naming the known ones otherwise)."""
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")

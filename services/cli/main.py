"""`flywheel`: run the data flywheel locally, or one of its services.

Commands from services plug in through EXTRA_COMMANDS: a module with
`register(subparsers)` that adds its parser and sets `func` (args -> exit status).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.config import CommonSettings, ConfigError, load_settings
from services.devstack import supervisor
from services.devstack.stack import SERVICES, available_services

# Modules that add subcommands (keys, train, snapshot, demo...), imported lazily.
EXTRA_COMMANDS: list[str] = [
    "services.gateway.keys_cli",
    "services.lake.cli",
    "services.trainer.cli",
    "services.cli.demo",
    "services.cli.projects",
]

console = Console(stderr=False)


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get("FLYWHEEL_HOME", ".flywheel"))


def status_table(components: list[supervisor.Component]) -> Table:
    table = Table(title="Flywheel stack", show_lines=False)
    for col in ("component", "address", "state", "pid", "log"):
        table.add_column(col)
    for c in components:
        state = supervisor.probe(c)
        colour = "green" if state == "ready" else "red" if state == "stopped" else "yellow"
        table.add_row(c.name, c.address, f"[{colour}]{state}[/{colour}]", str(c.pid), c.log)
    return table


def cmd_up(args: argparse.Namespace) -> int:
    try:
        # The shared settings every service will read: refuse a bad value before starting anything.
        load_settings(CommonSettings)
    except ConfigError as exc:
        console.print(f"[red]flywheel up:[/red] {exc.message}", highlight=False)
        return 2
    home = _home(args)
    only = args.only.split(",") if args.only else None
    try:
        components = supervisor.up(
            home,
            kafka=args.kafka,
            bootstrap=args.bootstrap,
            kafka_port=args.kafka_port,
            prometheus_port=args.prometheus_port,
            only=only,
            free_ports=args.free_ports,
            progress=lambda msg: console.print(f"[dim]·[/dim] {msg}"),
        )
    except (supervisor.StackError, RuntimeError) as exc:
        console.print(f"[red]flywheel up failed:[/red] {exc}")
        return 1
    if args.with_example_model:
        from services.cli.demo.endpoints import DemoError
        from services.cli.example import serve_example_model
        from services.devstack.credentials import StackCredentials

        try:
            credentials = StackCredentials.load(home)
            serve_example_model(components, credentials, progress=lambda msg: console.print(f"[dim]·[/dim] {msg}"))
        except (DemoError, RuntimeError) as exc:
            console.print(f"[red]the example model could not be served:[/red] {exc}")
            console.print(f"the stack is still running; stop it with [bold]flywheel down --home {home}[/bold]")
            return 1
    console.print(status_table(components))
    console.print(
        f"credentials (service tokens, the gateway's admin API key, the webhook token): {home}/run/credentials.json"
    )
    if not args.foreground:
        console.print(f"running in the background; stop with [bold]flywheel down[/bold] (state in {home}/run)")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print("attached: Ctrl-C stops everything")
    stop.wait()
    supervisor.down(home, progress=lambda msg: console.print(f"[dim]·[/dim] {msg}"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    components = supervisor.read_state(_home(args))
    if not components:
        console.print("nothing running (no state file); start with [bold]flywheel up[/bold]")
        return 3
    console.print(status_table(components))
    return 0 if all(supervisor.probe(c) == "ready" for c in components) else 1


def cmd_down(args: argparse.Namespace) -> int:
    stopped = supervisor.down(_home(args), progress=lambda msg: console.print(f"[dim]·[/dim] {msg}"))
    console.print(f"stopped {len(stopped)} component(s)" if stopped else "nothing was running")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    names = [s.name for s in available_services()]
    if args.service not in names:
        console.print(f"[red]unknown service {args.service!r}[/red]; available: {', '.join(names) or 'none yet'}")
        return 2
    if getattr(args, "home", None):
        os.environ["FLYWHEEL_HOME"] = str(args.home)
    # Replace this process so signals reach the service directly.
    cmd = [sys.executable, "-m", f"services.{args.service}", *args.service_args]
    if hasattr(os, "execv"):
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Flywheel: labels in, versioned datasets, trained models, served with adaptive "
        "batching, watched for drift, and back to training.",
    )
    parser.add_argument("--home", help=HOME_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start the broker, Prometheus and every service, wait until ready")
    p.add_argument("--kafka", choices=["tansu", "apache"], default="tansu", help="embedded broker to start")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="use an existing Kafka cluster instead")
    p.add_argument("--kafka-port", type=int, default=9092)
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--only", metavar="A,B", help="start only these services")
    p.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops everything")
    p.add_argument(
        "--with-example-model",
        action="store_true",
        help="then label, train and serve the example project's model (digits), about a minute: "
        "what `make up` runs, so `make loadtest` has a model to call",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="show what `up` started and whether each part is ready")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", help="stop everything `up` started")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser(
        "serve",
        help="run one service in the foreground",
        description="Run one service. Flags after the name go to the service; see "
        "`flywheel serve SERVICE --help`. Services: " + ", ".join(s.name for s in SERVICES),
    )
    p.add_argument("service")
    p.add_argument("service_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_serve)

    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(sub)
    _accept_home_everywhere(sub)
    return parser


HOME_HELP = "state folder (default: $FLYWHEEL_HOME or .flywheel; the demo's: .flywheel/demo)"


def _accept_home_everywhere(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`--home DIR` is accepted after any (sub)command too: `flywheel down --home DIR` is what the demo
    prints. SUPPRESS keeps a value given before the command when it is not repeated after it."""
    for parser in set(sub.choices.values()):
        if not any("--home" in a.option_strings for a in parser._actions):
            parser.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_home_everywhere(action)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _operator_credential(args)
    return int(args.func(args) or 0)


def _operator_credential(args: argparse.Namespace) -> None:
    """Commands that call a service (snapshot, train, …) call it as the operator of the stack under --home,
    unless FLYWHEEL_SERVICE_TOKEN names another caller."""
    if os.environ.get("FLYWHEEL_SERVICE_TOKEN") or args.command in ("up", "serve", "demo"):
        return
    from services.devstack.credentials import StackCredentials

    try:
        os.environ["FLYWHEEL_SERVICE_TOKEN"] = StackCredentials.load(_home(args)).token("operator")
    except FileNotFoundError:
        pass  # no stack under this home: the command says what it could not reach


if __name__ == "__main__":
    sys.exit(main())

"""`flywheel`: run the data flywheel locally, or one of its services.

Commands from services plug in through EXTRA_COMMANDS: a module with
`register(subparsers)` that adds its parser and sets `func` (args -> exit status).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
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


def _uptime(c: supervisor.Component) -> str:
    if c.state not in ("starting", "running") or not c.started_at:
        return "-"
    seconds = int(time.time() - c.started_at)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def component_state(c: supervisor.Component, supervised: bool) -> str:
    """The daemon's state, checked against the process and its readiness probe right now."""
    if not supervisor.pid_alive(c.pid):
        return c.state if supervised and c.state in ("restarting", "crash-looping") else "stopped"
    if c.state == "running" and supervisor.probe(c) != "ready":
        return "running (not ready)"
    return c.state if supervised else "running (unsupervised)"


STATE_COLOURS = {"running": "green", "stopped": "red", "crash-looping": "red"}


def status_table(components: list[supervisor.Component], supervised: bool = True) -> Table:
    table = Table(title="Flywheel stack", show_lines=False)
    for col in ("component", "address", "state", "restarts", "uptime", "last exit", "pid", "log"):
        table.add_column(col)
    for c in components:
        state = component_state(c, supervised)
        colour = STATE_COLOURS.get(state, "yellow")
        table.add_row(
            c.name,
            c.address,
            f"[{colour}]{state}[/{colour}]",
            str(c.restarts),
            _uptime(c),
            c.last_exit or "-",
            str(c.pid),
            c.log,
        )
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
            # --foreground: the daemon stops the stack when this command ends, however it ends.
            foreground_pid=os.getpid() if args.foreground else 0,
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
        console.print(
            f"running in the background under a supervisor that restarts what crashes; "
            f"stop with [bold]flywheel down[/bold] (state in {home}/run)"
        )
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print("attached, supervised: Ctrl-C stops everything")
    stop.wait()
    supervisor.down(home, progress=lambda msg: console.print(f"[dim]·[/dim] {msg}"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    home = _home(args)
    components = supervisor.read_state(home)
    if not components:
        console.print("nothing running (no state file); start with [bold]flywheel up[/bold]")
        return 3
    supervised = bool(supervisor.supervisor_pid(home))
    console.print(status_table(components, supervised))
    if not supervised:
        console.print("[red]the supervisor is not running[/red]: nothing restarts; `flywheel up` takes over again")
    for c in components:
        if c.state == "crash-looping" and c.last_log:
            console.print(f"[red]{c.name} is crash-looping[/red] ({c.last_exit}); the end of {c.log}:")
            console.print("\n".join(c.last_log), markup=False, highlight=False)
            console.print(f"fix the cause, then [bold]flywheel restart {c.name}[/bold]")
    return 0 if supervised and all(component_state(c, True) == "running" for c in components) else 1


def cmd_restart(args: argparse.Namespace) -> int:
    home = _home(args)
    name = _component_name(home, args.service)
    try:
        comp = supervisor.restart(home, name)
    except supervisor.StackError as exc:
        console.print(f"[red]flywheel restart:[/red] {exc}")
        return 1
    console.print(f"{comp.name} restarted (pid {comp.pid}) and ready")
    return 0


def _component_name(home: Path, wanted: str) -> str:
    """`kafka` and `broker` name the broker, whose component name says its kind (`kafka (tansu)`)."""
    for c in supervisor.read_state(home):
        if c.name == wanted or (wanted in ("kafka", "broker") and c.kind == "broker"):
            return c.name
    return wanted


def cmd_logs(args: argparse.Namespace) -> int:
    home = _home(args)
    name = _component_name(home, args.service)
    comp = next((c for c in supervisor.read_state(home) if c.name == name), None)
    path = Path(comp.log) if comp is not None else home / "logs" / f"{name}.log"
    if name == "supervisor":
        path = home / "logs" / "supervisor.log"
    if not path.exists():
        known = ", ".join(["supervisor", *(c.name for c in supervisor.read_state(home))])
        console.print(f"[red]flywheel logs:[/red] no log for {name!r} at {path}; components: {known}")
        return 2
    for line in supervisor.log_tail(str(path), args.lines):
        print(line)
    if not args.follow:
        return 0
    return _follow(path)


def _follow(path: Path) -> int:
    """`tail -f`: print what is appended until Ctrl-C, reopening when the file is replaced."""
    with contextlib.suppress(KeyboardInterrupt):
        fh = path.open("rb")
        fh.seek(0, os.SEEK_END)
        while True:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                continue
            if path.exists() and path.stat().st_ino != os.fstat(fh.fileno()).st_ino:
                fh.close()
                fh = path.open("rb")
            time.sleep(0.2)
    return 0


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

    p = sub.add_parser(
        "up",
        help="start the broker, Prometheus and every service under a supervisor, wait until ready",
        description=UP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kafka",
        choices=["tansu", "apache"],
        default="tansu",
        help="embedded broker to start: tansu (memory: a restart loses topics, events and offsets) or "
        "apache (its log under HOME/kafka/apache, kept across restarts and `down`)",
    )
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

    p = sub.add_parser("status", help="per component: state, restarts, uptime, last exit reason")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("restart", help="restart one component (same ports and settings), wait until ready")
    p.add_argument("service", metavar="SERVICE", help="a service, `prometheus`, or `kafka` for the broker")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("logs", help="print the end of a component's log (`supervisor` for the supervisor's own)")
    p.add_argument("service", metavar="SERVICE", help="a service, `prometheus`, `kafka` or `supervisor`")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended, until Ctrl-C")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many lines (default 50)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("down", help="stop the supervisor and everything `up` started")
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


UP_DESCRIPTION = """\
Start the broker, Prometheus (when installed) and every service, under a supervisor daemon
that outlives this command (pid in HOME/run/supervisor.pid, stopped by `flywheel down`).

A component that exits unexpectedly is restarted with the same ports and settings, after a
back-off that doubles from 0.5 s to 30 s (reset after 30 s of stable running); 5 exits within
60 s mark it crash-looping, left alone with its last log lines in `flywheel status`, until
`flywheel restart SERVICE`. On a partly running stack, `up` starts only what is missing.

The broker: Tansu (the default) keeps everything in memory, so a Tansu restart is a new, empty
broker: its topics, events and consumer offsets are gone. The supervisor starts it with a new
cluster id, re-creates the topics and restarts the services, whose consumers start at the
beginning of the new log; ingest re-sends the labels the old broker had acknowledged (kept
FLYWHEEL_INGEST_OUTBOX_KEEP_S, 15 min), and the lake stores each once. Prediction logs, drift
events and model announcements not yet consumed are lost with it. `--kafka apache` keeps its log
on disk under HOME/kafka/apache: a restart (or `down` and `up`) keeps every topic, event and offset.
"""

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

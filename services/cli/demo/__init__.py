"""`flywheel demo [--quick]`: the whole flywheel on this machine, start to finish, then stop.

Starts the stack on embedded defaults (Tansu, SQLite, local object store and lake, Prometheus when
installed) on free ports under its own home, tells one turn of the story (see story.py), prints a
summary, writes `summary.json` and `report.html`, and stops everything it started — also on Ctrl-C.
Everything random (which digits are labelled, the splits, training, traffic) follows `--seed`.
Exit status: 0 when the story holds (nothing lost, the model beats its baselines, no clean window
flagged as drifted, the real shift found), 1 when a step fails (the message names the step and the
log), 2 on bad settings.

`flywheel demo --project PATH` (repeatable) tells the same story for any project folder
(`project.yaml` and `data/labels.csv`, or a `make_data.py` that writes it): the spec registered,
labels in through the API and Label Studio webhooks (image files fetched by reference from a Label
Studio-compatible file server the demo starts), bad inputs refused, a snapshot, a model that must
beat its baselines, served, native inputs through the gateway's `:predict`, clean traffic with no
false alarm, then shifted traffic whose drift the monitor must find. Several `--project`s run side
by side on one stack. See project_story.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import time
from pathlib import Path

from rich.console import Console

from services.config import CommonSettings, ConfigError, load_settings
from services.devstack import supervisor

console = Console()


DEFAULT_HOME = ".flywheel/demo"
DEMO_MARKER = ".flywheel-demo"  # a folder the demo made, so it may wipe it again


def demo_env(quick: bool) -> dict[str, str]:
    """Settings the demo gives the services: windows short enough to see drift in a minute (the runner makes
    and hands out the credentials, as for `flywheel up`)."""
    return {
        "FLYWHEEL_GATEWAY_CANARY_WEIGHT": "0.3",
        "FLYWHEEL_GATEWAY_DEFAULT_RATE_PER_S": "5000",
        "FLYWHEEL_GATEWAY_DEFAULT_BURST": "5000",
        "FLYWHEEL_LAKE_FLUSH_INTERVAL_S": "0.5",
        "FLYWHEEL_LAKE_GAUGES_INTERVAL_S": "2",
        "FLYWHEEL_MONITOR_WINDOW_SIZE": "200",
        "FLYWHEEL_MONITOR_WINDOW_STEP": "50",
        "FLYWHEEL_MONITOR_MIN_SAMPLES": "100",
        "FLYWHEEL_MONITOR_PERSIST_WINDOWS": "2",
        "FLYWHEEL_MONITOR_TIME_STEP_S": "10",
        "FLYWHEEL_MONITOR_TRAIN_COOLDOWN_S": "600",
        "FLYWHEEL_MONITOR_TRAIN_BUDGET_S": "60" if quick else "300",
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from services.cli.demo.config import DemoConfig
    from services.cli.demo.endpoints import DemoError, Endpoints
    from services.cli.demo.report import print_summary, write_report
    from services.cli.demo.story import Story
    from services.devstack.credentials import StackCredentials

    try:
        load_settings(CommonSettings)
    except ConfigError as exc:
        console.print(f"[red]flywheel demo:[/red] {exc.message}", highlight=False)
        return 2
    chosen = getattr(args, "home", None)
    home = Path(chosen or DEFAULT_HOME).resolve()
    if any(supervisor.pid_alive(c.pid) for c in supervisor.read_state(home)):
        console.print(
            f"[red]flywheel demo:[/red] a stack is already running from {home}; "
            f"stop it with `flywheel down --home {home}`"
        )
        return 2
    if chosen and home.exists() and any(home.iterdir()) and not (home / DEMO_MARKER).exists():
        console.print(
            f"[red]flywheel demo:[/red] {home} is not empty and not a demo's home: the demo wipes its home at "
            "start, so give it an empty or new folder (`--home DIR`)"
        )
        return 2
    if home.exists():
        shutil.rmtree(home)  # the demo's own home: every run starts from nothing
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("a `flywheel demo` home: wiped by the next demo run\n")
    if getattr(args, "project", None):
        from services.cli.demo.project_run import run_projects

        return run_projects(args, home, console)
    cfg = DemoConfig.make(args.quick, home, args.seed)
    started = time.monotonic()
    # SIGTERM behaves like Ctrl-C: unwind through `finally` and stop the stack.
    signal.signal(signal.SIGTERM, _interrupt)
    console.rule(f"[bold]Flywheel demo{' (quick)' if args.quick else ''}[/bold] — home {home}")
    console.print(f"  [dim]·[/dim] seed {cfg.seed} (`--seed N` replays another draw of labels, splits and traffic)")
    story: Story | None = None
    code = 1
    try:
        components = supervisor.up(
            home,
            free_ports=True,
            extra_env=demo_env(args.quick),
            progress=lambda m: console.print(f"  [dim]·[/dim] {m}"),
        )
        console.print(
            f"  [dim]·[/dim] stack ready in {time.monotonic() - started:.1f} s ({len(components)} components)"
        )
        from loadtests.run import run_locust  # the composition root wires the load generator in

        story = Story(cfg, Endpoints.from_components(components, StackCredentials.load(home)), console, run_locust)
        for step in (story.ingest, story.train_first, story.serve, story.load, story.drift, story.canary):
            step()
        code = 0
    except DemoError as exc:
        console.print(f"[red]demo stopped:[/red] {exc}")
    except (supervisor.StackError, RuntimeError) as exc:
        console.print(f"[red]the stack did not start:[/red] {exc}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        code = 130
    finally:
        if story is not None:
            story.close()
            print_summary(console, story.results)
            report = write_report(home / "demo", story.results, dataclasses.asdict(cfg) | {"home": str(home)})
            console.print(f"report: [bold]{report}[/bold] (summary.json beside it)")
        if args.keep_running and code == 0:
            console.print(f"stack left running (--keep-running): stop it with `flywheel down --home {home}`")
        else:
            supervisor.down(home, progress=lambda m: console.print(f"  [dim]·[/dim] {m}"))
    if code == 0 and story is not None:
        code = verdict(story.results.values)
    console.print(f"demo {'finished' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return code


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def verdict(v: dict) -> int:
    """The story's invariants; a broken one is a failed demo (CI runs `flywheel demo --quick`)."""
    problems = []
    if v.get("labels_lost"):
        problems.append(f"{v['labels_lost']} labels lost between ingest and the lake")
    best = max(v.get("baselines", {}).values(), default=1.0)
    if not (v.get("v1_test_accuracy") or 0) > best:
        problems.append("the first model does not beat its baselines")
    if not v.get("clean_windows"):
        problems.append("no window of clean traffic was tested, so false alarms were not measured")
    if v.get("clean_windows_drifted"):
        problems.append(f"{v['clean_windows_drifted']} of {v['clean_windows']} clean windows were flagged as drifted")
    if not v.get("drift_detected_after_events"):
        problems.append("drift was not detected")
    if not v.get("dead_lettered"):
        problems.append("malformed events were not dead-lettered")
    for p in problems:
        console.print(f"[red]story broken:[/red] {p}")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="run the whole flywheel locally, start to finish (about 3 minutes; --quick: about 1-2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer labels, no search, shorter load: the same story, faster")
    p.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="state folder of the demo's stack (default .flywheel/demo; wiped at start, so it must be new, "
        "empty or an earlier demo's)",
    )
    p.add_argument("--seed", type=int, default=0, help="draws the labels, splits, training and traffic (default 0)")
    p.add_argument("--keep-running", action="store_true", help="leave the stack running after a successful demo")
    p.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="PATH",
        help="a project folder (project.yaml + data/labels.csv or make_data.py) to run the story on instead of "
        "digits; repeat it to run several projects side by side on one stack (e.g. examples/strokes)",
    )
    p.set_defaults(func=cmd_demo)

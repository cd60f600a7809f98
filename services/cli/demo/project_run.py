"""`flywheel demo --project PATH …`: the stack, a Label Studio-compatible file server, one story per project.

The projects run one after another on one stack (one broker, one lake, one gateway, one monitor),
then each is asked for a prediction again: every project keeps its own model, snapshot and drift.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.demo.endpoints import DemoError, Endpoints, check
from services.cli.demo.project_data import ProjectData, ProjectDataError
from services.cli.demo.project_story import ProjectConfig, ProjectStory, verdict
from services.devstack import supervisor
from services.devstack.label_studio import LabelStudioFiles, LabelStudioServer


def project_config(quick: bool, seed: int) -> ProjectConfig:
    if quick:
        return ProjectConfig(n_labels=1000, clean_predictions=400, seed=seed)
    return ProjectConfig(n_labels=1400, clean_predictions=600, seed=seed)


def run_projects(args: argparse.Namespace, home: Path, console: Console) -> int:
    from services.cli.demo import demo_env
    from services.devstack.credentials import StackCredentials

    started = time.monotonic()
    datas: list[ProjectData] = []
    for folder in args.project:
        path = Path(folder)
        try:
            data = ProjectData.load(path, make_into=home / "project-data" / path.resolve().name)
        except ProjectDataError as exc:
            console.print(f"[red]flywheel demo --project:[/red] {exc}", highlight=False)
            return 2
        datas.append(data)
    names = [d.spec.name for d in datas]
    if len(set(names)) != len(names):
        console.print(f"[red]flywheel demo --project:[/red] two project folders name the same project: {names}")
        return 2
    cfg = project_config(args.quick, args.seed)
    console.rule(f"[bold]Flywheel demo{' (quick)' if args.quick else ''}[/bold]: {', '.join(names)} — home {home}")
    sizes = ", ".join(f"{d.spec.name}: {len(d.examples)} examples" for d in datas)
    console.print(f"  [dim]·[/dim] seed {cfg.seed}; {sizes}")
    files = LabelStudioFiles(home / "label-studio")
    stories: list[ProjectStory] = []
    code = 1
    ls = LabelStudioServer(files).start()
    try:
        env = {
            **demo_env(args.quick),
            "FLYWHEEL_INGEST_LABEL_STUDIO_URL": ls.url,
            "FLYWHEEL_INGEST_LABEL_STUDIO_TOKEN": files.api_token,
        }
        console.print(f"  [dim]·[/dim] Label Studio-compatible file server at {ls.url}")
        components = supervisor.up(
            home, free_ports=True, extra_env=env, progress=lambda m: console.print(f"  [dim]·[/dim] {m}")
        )
        creds = StackCredentials.load(home)  # the runner made them: the gateway's key, the webhook token
        key, token = creds.gateway_key, creds.webhook_token
        ep = Endpoints.from_components(components, creds)
        ready_s = time.monotonic() - started
        console.print(f"  [dim]·[/dim] stack ready in {ready_s:.1f} s ({len(components)} components)")
        for data in datas:
            story = ProjectStory(data, ep, key, token, console, cfg, files)
            stories.append(story)
            console.rule(f"[bold]{data.spec.name}[/bold] ({data.spec.kind})")
            story.run()
        if len(stories) > 1:
            _side_by_side(stories, console)
        code = 0
    except DemoError as exc:
        console.print(f"[red]demo stopped:[/red] {exc}")
    except (supervisor.StackError, RuntimeError) as exc:
        console.print(f"[red]the stack did not start:[/red] {exc}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        code = 130
    finally:
        for story in stories:
            story.close()
        results = {s.name: s.results.values for s in stories}
        if results:
            _print_summary(console, results)
            out = home / "demo"
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps({"projects": results}, indent=2, default=str))
            console.print(f"summary: [bold]{out / 'summary.json'}[/bold]")
        if args.keep_running and code == 0:
            console.print(f"stack left running (--keep-running): stop it with `flywheel down --home {home}`")
        else:
            supervisor.down(home, progress=lambda m: console.print(f"  [dim]·[/dim] {m}"))
        ls.close()
    if code == 0:
        for story in stories:
            for problem in verdict(story.results.values):
                console.print(f"[red]story broken ({story.name}):[/red] {problem}")
                code = 1
        if len(stories) < len(datas):
            code = 1
    console.print(f"demo {'finished' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return code


def _side_by_side(stories: list[ProjectStory], console: Console) -> None:
    """After every story: each project's own version still answers its own inputs through the one gateway."""
    for story in stories:
        answer = story.predict(story.traffic[:5])
        versions = check(
            story.http.get(f"{story.ep.http['trainer']}/v1/models", params={"model": story.name}), "models"
        )
        if answer.get("model") != story.name:
            raise DemoError(f"the gateway answered {story.name}'s inputs with model {answer.get('model')!r}")
        story.say(
            f"still served beside the others: {len(answer['predictions'])} predictions from "
            f"{story.name} v{answer.get('model_version')}; {len(versions)} version(s) registered"
        )
        story.results["side_by_side_version"] = answer.get("model_version")


def _print_summary(console: Console, results: dict[str, dict]) -> None:
    table = Table(title="Flywheel demo: one turn of the flywheel per project")
    table.add_column("what")
    for name in results:
        table.add_column(name, justify="right")

    def fmt(value: object) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, dict):
            return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
        return str(value)

    rows = [
        ("input kind", "kind"),
        ("labels sent / in lake / lost", None),
        ("bad inputs refused (4xx naming the field)", "bad_inputs_refused"),
        ("Label Studio fetches dead-lettered", "fetches_dead_lettered"),
        ("model family, version", None),
        ("test accuracy", "v1_test_accuracy"),
        ("baselines (test accuracy)", "baselines"),
        ("margin over the best baseline (combined)", "margin_over_best_baseline"),
        ("live accuracy through :predict", "live_accuracy"),
        ("clean windows tested / flagged", None),
        ("drift found after (shifted predictions)", "drift_detected_after_events"),
        ("accuracy on shifted inputs", "shifted_accuracy"),
    ]
    for what, key in rows:
        cells = []
        for r in results.values():
            if key is not None:
                cells.append(fmt(r.get(key)))
            elif what.startswith("labels"):
                counts = (r.get("labels_sent"), r.get("labels_in_lake"), r.get("labels_lost"))
                cells.append(" / ".join(fmt(c) for c in counts))
            elif what.startswith("model"):
                cells.append(f"{fmt(r.get('family'))}, v{fmt(r.get('v1'))}")
            else:
                cells.append(f"{fmt(r.get('clean_windows'))} / {fmt(r.get('clean_windows_drifted'))}")
        table.add_row(what, *cells)
    console.print(table)

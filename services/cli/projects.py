"""`flywheel projects create|list|show|import-label-studio` and `flywheel models deploy`.

They talk to a running trainer (and ingest, for imports), found at `--trainer-url` / `--ingest-url`,
else `$FLYWHEEL_TRAINER_URL` / `$FLYWHEEL_INGEST_URL`, else the stack that `flywheel up` started
under the home (`--home`, `$FLYWHEEL_HOME`, `.flywheel`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from services.devstack import supervisor
from services.projects import SpecInvalid, load_spec_file, spec_json

console = Console()
MODEL_TIMEOUT_S = 600.0  # measuring a model runs the baselines on a snapshot


class CommandError(RuntimeError):
    pass


def service_url(args: argparse.Namespace, service: str) -> str:
    """`--<service>-url`, else `$FLYWHEEL_<SERVICE>_URL`, else the running stack's address of the service."""
    given = getattr(args, f"{service}_url", None) or os.environ.get(f"FLYWHEEL_{service.upper()}_URL")
    if given:
        return str(given).rstrip("/")
    home = Path(getattr(args, "home", None) or os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    for c in supervisor.read_state(home):
        if c.name == service and "http" in c.roles():
            return f"http://{c.roles()['http']}"
    raise CommandError(
        f"no {service} found: no stack running under {home} (start one with `flywheel up`), "
        f"and neither --{service}-url nor FLYWHEEL_{service.upper()}_URL is set"
    )


def _auth(content_type: str | None = None) -> dict[str, str]:
    """The trainer admits trusted callers only: calls go as FLYWHEEL_SERVICE_TOKEN (`flywheel` sets it to
    the operator's token of the stack under --home when it is not set)."""
    headers = {"Content-Type": content_type} if content_type else {}
    token = os.environ.get("FLYWHEEL_SERVICE_TOKEN", "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def trainer_url(args: argparse.Namespace) -> str:
    return service_url(args, "trainer")


def _answer(resp: httpx.Response, what: str) -> dict:
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text[:500]}
    if resp.status_code >= 400:
        problems = body.get("problems") if isinstance(body, dict) else None
        detail = body.get("detail", body) if isinstance(body, dict) else body
        lines = "\n  ".join(problems) if problems else str(detail)
        raise CommandError(f"{what} refused (HTTP {resp.status_code}):\n  {lines}")
    return body


def _run(fn, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(fn(args))
    except CommandError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 1
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the trainer: {exc}[/red]", highlight=False)
        return 1


# -- projects --------------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    try:
        spec = load_spec_file(Path(args.file))  # user code referenced by path is inlined here
    except SpecInvalid as exc:
        console.print(f"[red]{args.file}: {exc}[/red]", highlight=False)
        return 2
    resp = httpx.post(
        f"{trainer_url(args)}/v1/projects",
        content=spec_json(spec),
        headers=_auth("application/json"),
        timeout=60,
    )
    body = _answer(resp, f"project {spec.name}")
    state = "created" if body.get("created") else "unchanged (same spec as the latest version)"
    console.print(f"project {body['name']} v{body['version']} {state}: {body['kind']} input, family {body['family']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    body = _answer(httpx.get(f"{trainer_url(args)}/v1/projects", headers=_auth(), timeout=30), "list projects")
    table = Table("project", "version", "kind", "labels", "family")
    for p in body:
        labels = ", ".join(p["labels"][:6]) + (" …" if len(p["labels"]) > 6 else "")
        table.add_row(p["name"], str(p["version"]), p["kind"], labels, p["family"])
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    body = _answer(
        httpx.get(f"{trainer_url(args)}/v1/projects/{args.name}", headers=_auth(), timeout=30), f"project {args.name}"
    )
    console.print_json(json.dumps(body))
    return 0


# -- a Label Studio project's export ---------------------------------------------------------------
IMPORT_CHUNK = 500  # tasks per request (ingest takes at most FLYWHEEL_INGEST_MAX_BATCH annotations at once)


def read_export(args: argparse.Namespace) -> list[dict]:
    """The export's tasks: a JSON file (Label Studio's "JSON" export), or fetched from Label Studio's API."""
    if args.file:
        try:
            doc = json.loads(Path(args.file).read_bytes())
        except (OSError, ValueError) as exc:
            raise CommandError(f"{args.file}: not a readable JSON export ({exc})") from None
    else:
        if not args.label_studio_url or not args.label_studio_project:
            raise CommandError("give --file EXPORT.json, or --label-studio-url and --label-studio-project")
        token = args.label_studio_token or os.environ.get("FLYWHEEL_INGEST_LABEL_STUDIO_TOKEN", "")
        url = f"{args.label_studio_url.rstrip('/')}/api/projects/{args.label_studio_project}/export"
        resp = httpx.get(url, params={"exportType": "JSON"}, headers={"Authorization": f"Token {token}"}, timeout=300)
        if resp.status_code >= 400:
            raise CommandError(f"Label Studio answered HTTP {resp.status_code} for {url}: {resp.text[:300]}")
        doc = resp.json()
    tasks = doc.get("tasks") if isinstance(doc, dict) else doc
    if not isinstance(tasks, list):
        raise CommandError("the export is not a list of tasks (Label Studio's JSON export)")
    return tasks


def cmd_import(args: argparse.Namespace) -> int:
    tasks = read_export(args)
    url = f"{service_url(args, 'ingest')}/v1/projects/{args.project}/label-studio/import"
    totals = {"accepted": 0, "queued": 0, "ignored": 0}
    for start in range(0, len(tasks), IMPORT_CHUNK):
        chunk = tasks[start : start + IMPORT_CHUNK]
        resp = httpx.post(url, json=chunk, headers=_auth(), timeout=300)
        body = _answer(resp, f"importing tasks {start}-{start + len(chunk) - 1}")
        totals["accepted"] += int(body.get("accepted", 0))
        totals["queued"] += int(body.get("queued", 0))
        totals["ignored"] += len(body.get("ignored", []))
    console.print(
        f"{len(tasks)} tasks imported into {args.project}: {totals['accepted']} labels accepted, "
        f"{totals['queued']} queued for their files to be fetched, {totals['ignored']} ignored"
    )
    return 0


# -- models deploy ---------------------------------------------------------------------------------
def read_model(location: str) -> bytes:
    """A local file, or any fsspec URL (s3://, gs://, …) read with this machine's credentials."""
    if "://" in location and not location.startswith("file://"):
        import fsspec

        try:
            with fsspec.open(location, "rb") as fh:
                return fh.read()
        except (OSError, ValueError, ImportError) as exc:
            raise CommandError(f"cannot read {location}: {exc}") from None
    path = Path(location.removeprefix("file://"))
    if not path.is_file():
        raise CommandError(f"no model file {path}")
    return path.read_bytes()


def cmd_deploy(args: argparse.Namespace) -> int:
    data = read_model(args.path)
    params = {k: v for k, v in (("snapshot_id", args.snapshot), ("promote", args.promote)) if v}
    console.print(f"uploading {len(data):,} bytes to the trainer; it checks the model against project {args.project}")
    resp = httpx.post(
        f"{trainer_url(args)}/v1/models/{args.project}/versions",
        content=data,
        params=params,
        headers=_auth("application/octet-stream"),
        timeout=MODEL_TIMEOUT_S,
    )
    body = _answer(resp, f"deploying {args.path}")
    m = body.get("metrics", {})
    where = f"{body['lineage']}, {body['model_family']}"
    console.print(f"{body['model']} v{body['version']} registered ({where}), stage {body['stage']}")
    if "test_accuracy" in m:
        best = max(
            (
                (k.removeprefix("baseline_").removesuffix("_test_accuracy"), v)
                for k, v in m.items()
                if k.startswith("baseline_") and k.endswith("_test_accuracy")
            ),
            key=lambda kv: kv[1],
            default=("none", float("nan")),
        )
        console.print(
            f"measured on snapshot {body['measured_on']}: test accuracy {m['test_accuracy']:.4f} "
            f"(best baseline {best[0]} {best[1]:.4f})"
        )
    else:
        console.print(body.get("measured_on") or "not measured")
    if body.get("gate"):
        console.print("[yellow]the gate would refuse it:[/yellow] " + "; ".join(body["gate"]))
    elif body["stage"] == "candidate":
        console.print(
            f"the gate would let it through: `flywheel train promote {body['model']} {body['version']} production`"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def trainer_flag(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--trainer-url",
            help="the trainer's HTTP address (default: $FLYWHEEL_TRAINER_URL, else the running stack's)",
        )

    p = subparsers.add_parser("projects", help="create and list projects (a spec per model: input, labels, family)")
    sub = p.add_subparsers(dest="projects_command", required=True)
    c = sub.add_parser("create", help="register a project spec (a new version when it changed)")
    c.add_argument("-f", "--file", required=True, help="the spec (YAML), e.g. examples/strokes/project.yaml")
    trainer_flag(c)
    c.set_defaults(func=lambda a: _run(cmd_create, a))
    ls = sub.add_parser("list", help="the latest version of every project")
    trainer_flag(ls)
    ls.set_defaults(func=lambda a: _run(cmd_list, a))
    sh = sub.add_parser("show", help="a project's latest spec and its versions")
    sh.add_argument("name")
    trainer_flag(sh)
    sh.set_defaults(func=lambda a: _run(cmd_show, a))
    im = sub.add_parser(
        "import-label-studio",
        help="import a whole Label Studio project's annotations (its JSON export) into a project",
    )
    im.add_argument("project", help="the Flywheel project the labels belong to")
    im.add_argument("--file", help="Label Studio's JSON export, saved to a file")
    im.add_argument("--label-studio-url", help="or fetch the export from this Label Studio")
    im.add_argument("--label-studio-project", type=int, help="... this Label Studio project id")
    im.add_argument("--label-studio-token", help="its API token (default $FLYWHEEL_INGEST_LABEL_STUDIO_TOKEN)")
    im.add_argument(
        "--ingest-url", help="ingest's HTTP address (default: $FLYWHEEL_INGEST_URL, else the running stack's)"
    )
    im.set_defaults(func=lambda a: _run(cmd_import, a))

    m = subparsers.add_parser("models", help="serve models trained elsewhere")
    msub = m.add_subparsers(dest="models_command", required=True)
    d = msub.add_parser(
        "deploy",
        help="register an ONNX or TorchScript model for a project (checked against its spec, lineage external)",
        description="Upload a model trained elsewhere. It must take the project's model input (batch first, "
        "dynamic) and give one score per label in task.labels' order. When the project has labelled data, the "
        "trainer measures it on a fresh snapshot with the same baselines a training job runs, so the promotion "
        "gate judges it like a trained version.",
    )
    d.add_argument("path", help="model.onnx or model.pt (TorchScript); a local path or an fsspec URL (s3://…)")
    d.add_argument("--project", required=True, help="the project whose model it is (the model is named after it)")
    d.add_argument("--snapshot", default="", help="measure on this snapshot instead of a fresh one")
    d.add_argument("--promote", default="", choices=["", "canary", "production"], help="then promote it (gated)")
    trainer_flag(d)
    d.set_defaults(func=lambda a: _run(cmd_deploy, a))

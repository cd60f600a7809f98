"""`flywheel train …`: submit, watch (with a progress bar), cancel, list and promote, over the trainer's gRPC API;
`logs` over its REST API (found like `flywheel projects`' trainer: --trainer-url, $FLYWHEEL_TRAINER_URL, the stack).

`flywheel train run` trains in this process instead (no service needed), for a laptop or a bench.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.genproto.flywheel.v1 import trainer_pb2 as pb
from services.genproto.flywheel.v1 import trainer_pb2_grpc
from services.trainer.models.families import FAMILIES
from services.transportkit.auth import authenticated_channel

console = Console()
STATE_NAMES = {v: k for k, v in pb.JobState.items()}
DONE = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def _stub(args: argparse.Namespace) -> trainer_pb2_grpc.TrainerStub:
    """The trainer admits trusted callers only: calls go as FLYWHEEL_SERVICE_TOKEN (`flywheel` sets it to the
    operator's token of the stack under --home when it is not set)."""
    channel = grpc.insecure_channel(args.addr)
    return trainer_pb2_grpc.TrainerStub(authenticated_channel(channel, os.environ.get("FLYWHEEL_SERVICE_TOKEN", "")))


def _kv(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise SystemExit(f"--hp {p!r}: use key=value")
        out[key] = value
    return out


def _state(s: int) -> str:
    return STATE_NAMES.get(s, str(s)).removeprefix("JOB_STATE_").lower()


def _watch(stub: trainer_pb2_grpc.TrainerStub, job_id: str) -> int:
    last = None
    with Progress(
        TextColumn("[bold]{task.fields[phase]:<14}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=1.0, phase="queued")
        for p in stub.WatchJob(pb.GetJobRequest(job_id=job_id)):
            last = p
            extra = " ".join(f"{k}={v:.4f}" for k, v in sorted(p.metrics.items()) if "accuracy" in k)
            bar.update(task, completed=p.fraction, phase=p.phase or _state(p.state), description=f"{p.message} {extra}")
    job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
    colour = "green" if job.state == pb.JOB_STATE_SUCCEEDED else "red"
    console.print(f"job {job_id}: [{colour}]{_state(job.state)}[/{colour}] {job.reason}")
    if job.state == pb.JOB_STATE_SUCCEEDED:
        console.print(f"model {job.model} v{job.model_version}; report {job.report_uri}")
        for k, v in sorted(job.metrics.items()):
            console.print(f"  {k:<32} {v:.4f}")
    return 0 if last is not None and job.state == pb.JOB_STATE_SUCCEEDED else 1


def cmd_submit(args: argparse.Namespace) -> int:
    stub = _stub(args)
    try:
        job = stub.SubmitJob(
            pb.SubmitJobRequest(
                model=args.model,
                snapshot_id=args.snapshot,
                model_family=args.family,
                hyperparameters=_kv(args.hp),
                search=pb.SearchSpec(trials=args.trials, rounds=args.rounds) if args.trials else None,
                budget_s=args.budget,
                runner=args.runner,
                gpus=args.gpus,
                combined_metric=args.combined,
            )
        )
    except grpc.RpcError as exc:
        console.print(f"[red]refused:[/red] {exc.code().name}: {exc.details()}")
        return 2
    console.print(f"job {job.job_id} {_state(job.state)} on {job.runner}")
    return _watch(stub, job.job_id) if args.wait else 0


def _refused(exc: grpc.RpcError) -> int:
    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")  # type: ignore[attr-defined]
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
        console.print(
            "the trainer admits trusted callers only: `flywheel` calls as the operator of the stack under --home "
            "(its run/credentials.json), or set FLYWHEEL_SERVICE_TOKEN"
        )
    return 1


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        return _watch(_stub(args), args.job_id)
    except grpc.RpcError as exc:
        return _refused(exc)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        job = _stub(args).GetJob(pb.GetJobRequest(job_id=args.job_id))
    except grpc.RpcError as exc:
        console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
        return 1
    console.print(
        f"{job.job_id} {_state(job.state)} phase={job.phase} {job.fraction:.0%} "
        f"model={job.model} v{job.model_version} {job.reason}"
    )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        job = _stub(args).CancelJob(pb.GetJobRequest(job_id=args.job_id))
    except grpc.RpcError as exc:
        console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
        return 1
    console.print(f"{job.job_id}: {_state(job.state)} {job.reason}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    try:
        resp = _stub(args).ListModels(pb.ListModelsRequest(model=args.model))
    except grpc.RpcError as exc:
        return _refused(exc)
    table = Table(title="model registry")
    for col in ("model", "version", "stage", "snapshot", "test acc", "combined", "git"):
        table.add_column(col)
    for v in resp.versions:
        table.add_row(
            v.model,
            v.version,
            v.stage,
            v.snapshot_id,
            f"{v.metrics.get('test_accuracy', float('nan')):.4f}",
            f"{v.metrics.get('test_combined', float('nan')):.4f}",
            v.git_commit[:10],
        )
    console.print(table)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    try:
        v = _stub(args).PromoteModel(
            pb.PromoteModelRequest(model=args.model, version=args.version, stage=args.stage, force=args.force)
        )
    except grpc.RpcError as exc:
        console.print(f"[red]refused[/red] ({exc.code().name}): {exc.details()}")
        return 1
    console.print(f"{v.model} v{v.version} is now {v.stage}")
    return 0


def _tail_lines(value: str) -> int:
    from services.trainer.logs import MAX_TAIL

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of lines") from None
    if not 1 <= n <= MAX_TAIL:
        raise argparse.ArgumentTypeError(f"{n} is not between 1 and {MAX_TAIL}")
    return n


def _log_bytes(value: str) -> int:
    from services.trainer.logs import MAX_LOG_BYTES

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of bytes") from None
    if not 1 <= n <= MAX_LOG_BYTES:
        raise argparse.ArgumentTypeError(f"{n} is not between 1 and {MAX_LOG_BYTES} (8 MiB)")
    return n


def cmd_logs(args: argparse.Namespace) -> int:
    """The job's log to stdout as it comes; refusals (unknown job, no pod yet, gone after its TTL) to stderr."""
    from urllib.parse import quote

    import httpx

    from services.cli.projects import CommandError, service_url

    errors = Console(stderr=True)
    try:
        url = service_url(args, "trainer")
    except CommandError as exc:
        errors.print(f"[red]flywheel train logs:[/red] {exc}", highlight=False)
        return 1
    token = os.environ.get("FLYWHEEL_SERVICE_TOKEN", "")
    params: dict[str, str | int] = {"tail": args.tail, "max_bytes": args.max_bytes}
    if args.follow:
        params["follow"] = "true"
    # Following waits for output as long as the job is quiet; the trainer ends a quiet stream itself.
    timeout = httpx.Timeout(10.0, read=None if args.follow else 120.0)
    try:
        with httpx.stream(
            "GET",
            f"{url}/v1/jobs/{quote(args.job_id, safe='')}/logs",
            params=params,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                return _logs_refused(errors, args.job_id, resp)
            for chunk in resp.iter_bytes():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if resp.headers.get("X-Flywheel-Log-Truncated") == "true":
                errors.print(
                    f"[yellow]the log was cut at {args.max_bytes} bytes[/yellow]: use a smaller --tail "
                    "or a larger --max-bytes",
                    highlight=False,
                )
    except KeyboardInterrupt:
        return 0
    except httpx.HTTPError as exc:
        errors.print(f"[red]cannot reach the trainer at {url}:[/red] {exc}", highlight=False)
        return 1
    return 0


def _logs_refused(errors: Console, job_id: str, resp) -> int:  # type: ignore[no-untyped-def]
    try:
        body = resp.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = resp.text[:500]
    errors.print(f"[red]job {job_id}: no log (HTTP {resp.status_code})[/red]: {detail}", highlight=False)
    if resp.status_code == 401:
        errors.print(
            "the trainer admits trusted callers only: `flywheel` calls as the operator of the stack under --home "
            "(its run/credentials.json), or set FLYWHEEL_SERVICE_TOKEN",
            highlight=False,
        )
    elif resp.status_code == 409:
        errors.print("try again once the job's pod runs: `flywheel train status JOB` says where it is", highlight=False)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    """Train in this process: snapshot folder → model repository, report, registry (SQLite by default)."""
    import uuid
    from pathlib import Path

    from services.config import CommonSettings, load_settings
    from services.projects import SpecInvalid, load_spec_file
    from services.storage import Database, ObjectStore, migrate
    from services.trainer.errors import TrainerError
    from services.trainer.export import ExportOptions
    from services.trainer.job_run import JobContext, JobSpec, git_commit, run_job
    from services.trainer.registry import Registry, remote_publisher
    from services.trainer.settings import TrainerSettings
    from services.trainer.tables import MIGRATIONS
    from services.trainer.training.metrics import CombinedMetric

    try:
        project = load_spec_file(Path(args.spec))
    except SpecInvalid as exc:
        console.print(f"[red]{args.spec}[/red]: {exc}")
        return 2
    common = load_settings(CommonSettings)
    settings = load_settings(TrainerSettings)
    url = common.resolved_database_url()
    migrate(url, [MIGRATIONS])
    db = Database(url)
    repo = Path(args.repository) if args.repository else settings.model_repository
    registry = Registry(
        db,
        repository_uri=repo.resolve().as_uri(),
        margin=settings.promotion_margin,
        remote=remote_publisher(settings.remote_model_repository, repo),
    )
    snap = args.snapshot_uri.rstrip("/")
    with Progress(
        TextColumn("[bold]{task.fields[phase]:<14}"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.description}")
    ) as bar:
        task = bar.add_task("", total=1.0, phase="start")
        ctx = JobContext(
            repository=repo,
            reports=common.home / "reports",
            registry=registry,
            combined=CombinedMetric.parse(args.combined or settings.combined_metric),
            export=ExportOptions(exporter=args.exporter or settings.onnx_exporter),
            threads=args.threads or os.cpu_count() or 1,
            git_commit=git_commit(),
            read_object=ObjectStore(common.resolved_object_store_url()).get,
            progress=lambda phase, frac, msg, m: bar.update(task, completed=frac, phase=phase, description=msg),
        )
        spec = JobSpec(
            job_id=uuid.uuid4().hex[:16],
            model=project.name,
            model_family=args.family or project.family_name(),
            snapshot_id=snap.rsplit("/", 1)[-1],
            snapshot_uri=snap if "://" in snap else Path(snap).resolve().as_uri(),
            hyperparameters={**project.model.hyperparameters, **_kv(args.hp)},
            search_trials=args.trials,
            search_rounds=args.rounds,
            budget_s=args.budget,
            **JobSpec.project_fields(project),
        )
        try:
            out = run_job(spec, ctx)
        except TrainerError as exc:
            console.print(f"[red]{type(exc).__name__}[/red]: {exc}")
            return 1
    acc = out.metrics["test_accuracy"]
    console.print(f"{project.name} v{out.version}: test accuracy {acc:.4f}; report {out.report_uri}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="training jobs and the model registry")
    p.add_argument("--addr", default=os.environ.get("FLYWHEEL_TRAINER_ADDR", "127.0.0.1:8301"), help="trainer gRPC")
    sub = p.add_subparsers(dest="train_command", required=True)

    def job_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="digits", help="the project (its model is named after it)")
        q.add_argument("--family", default="", choices=["", *FAMILIES], help="default: the project's")
        q.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter (repeat)")
        q.add_argument("--trials", type=int, default=0, help="random-search trials (0: no search)")
        q.add_argument("--rounds", type=int, default=2, help="coarse-to-fine rounds")
        q.add_argument("--budget", type=float, default=0.0, help="seconds for training/search (0: no limit)")
        q.add_argument("--combined", default="", help="combined-metric formula override")

    s = sub.add_parser("submit", help="submit a job (and watch it with --wait)")
    s.add_argument("--snapshot", required=True, help="snapshot id")
    s.add_argument("--runner", default="", choices=["", "local", "kubernetes"])
    s.add_argument("--gpus", type=int, default=0)
    s.add_argument("--wait", action="store_true", help="show a progress bar until the job finishes")
    job_flags(s)
    s.set_defaults(func=cmd_submit)
    for name, fn, helptext in (
        ("watch", cmd_watch, "progress bar of a job"),
        ("status", cmd_status, "a job's state"),
        ("cancel", cmd_cancel, "cancel a job"),
    ):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("job_id")
        q.set_defaults(func=fn)
    lg = sub.add_parser(
        "logs",
        help="print a job's log (its Kubernetes pod's, or the local worker's)",
        description="Print the end of a training job's log: the log of its Kubernetes pod (the newest, if the "
        "Job retried), or of its local worker process. Read from the trainer's REST API: --trainer-url, else "
        "$FLYWHEEL_TRAINER_URL, else the stack `flywheel up` runs under --home. Exits 1 when there is no log "
        "to show: an unknown job, a pod that has not started (the reason is printed), a Job its TTL removed.",
    )
    lg.add_argument("job_id", metavar="JOB", help="the job's id (`flywheel train submit` prints it)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing what the job writes until it ends")
    lg.add_argument(
        "-n", "--tail", type=_tail_lines, default=1000, metavar="N", help="the last N lines, 1 to 10000 (default 1000)"
    )
    lg.add_argument(
        "--max-bytes",
        type=_log_bytes,
        default=1 << 20,
        metavar="B",
        help="at most B bytes, up to 8 MiB (default 1 MiB); a longer log is cut, and says so",
    )
    lg.add_argument("--trainer-url", default=None, metavar="URL", help="the trainer's REST address")
    lg.set_defaults(func=cmd_logs)
    m = sub.add_parser("models", help="list registered versions")
    m.add_argument("--model", default="")
    m.set_defaults(func=cmd_models)
    pr = sub.add_parser("promote", help="promote a version (the gate may refuse)")
    pr.add_argument("model")
    pr.add_argument("version")
    pr.add_argument("stage", choices=["canary", "production", "archived"])
    pr.add_argument("--force", action="store_true", help="skip the gate")
    pr.set_defaults(func=cmd_promote)
    r = sub.add_parser("run", help="train here, without the service")
    r.add_argument("--snapshot-uri", required=True, help="snapshot folder (path or fsspec URL)")
    r.add_argument("--spec", required=True, help="the project's spec file (project.yaml)")
    r.add_argument("--repository", default="", help="model repository (default FLYWHEEL_TRAINER_MODEL_REPOSITORY)")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--exporter", default="", choices=["", "dynamo", "torchscript"])
    job_flags(r)
    r.set_defaults(func=cmd_run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)

"""Training jobs in SQL: submit, read, watch, cancel. Runners start and stop them; workers report into here."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError
from sqlalchemy import select, update

from services.projects import spec_json
from services.projects.loading import problems_of
from services.projects.spec import KubernetesSpec
from services.storage import Database
from services.trainer.errors import InvalidRequest, JobConflict, JobLogUnavailable, JobNotFound, JobSpecInvalid
from services.trainer.job_run import JobSpec
from services.trainer.logs import MAX_LOG_BYTES, MAX_TAIL, JobLog, LogRequest
from services.trainer.projects import ProjectRegistry
from services.trainer.tables import jobs

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass
class Job:
    job_id: str
    state: str
    model: str
    model_family: str
    snapshot_id: str
    runner: str
    spec: JobSpec
    phase: str = ""
    fraction: float = 0.0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    model_version: str = ""
    report_uri: str = ""
    external_id: str = ""
    cancel_requested: bool = False
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def _job(row) -> Job:  # type: ignore[no-untyped-def]
    return Job(
        job_id=row.job_id,
        state=row.state,
        model=row.model,
        model_family=row.model_family,
        snapshot_id=row.snapshot_id,
        runner=row.runner,
        spec=JobSpec.from_json(row.spec),
        phase=row.phase,
        fraction=float(row.fraction),
        message=row.message,
        metrics=json.loads(row.metrics),
        reason=row.reason,
        model_version=row.model_version,
        report_uri=row.report_uri,
        external_id=row.external_id,
        cancel_requested=bool(row.cancel_requested),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


class JobStore:
    """The jobs table; the service and the workers (other processes, other pods) share it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, spec: JobSpec) -> Job:
        now = datetime.now(UTC)
        with self.db.session() as s:
            s.execute(
                jobs.insert().values(
                    job_id=spec.job_id,
                    state=QUEUED,
                    model=spec.model,
                    model_family=spec.model_family,
                    snapshot_id=spec.snapshot_id,
                    snapshot_uri=spec.snapshot_uri,
                    runner=spec.runner,
                    spec=spec.to_json(),
                    phase="queued",
                    fraction=0.0,
                    message="",
                    metrics="{}",
                    reason="",
                    model_version="",
                    report_uri="",
                    external_id="",
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                )
            )
        return self.get(spec.job_id)

    def get(self, job_id: str) -> Job:
        with self.db.session() as s:
            row = s.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return _job(row)

    def list(self, state: str | None = None) -> list[Job]:
        q = select(jobs).order_by(jobs.c.created_at)
        if state:
            q = q.where(jobs.c.state == state)
        with self.db.session() as s:
            return [_job(r) for r in s.execute(q)]

    def update(self, job_id: str, *, only_if_not_terminal: bool = True, **values: object) -> bool:
        """Update columns; returns False when the job had already finished (nothing changed)."""
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = json.dumps(values["metrics"], sort_keys=True)
        values["updated_at"] = datetime.now(UTC)
        if values.get("state") in TERMINAL:
            values.setdefault("finished_at", datetime.now(UTC))
        q = update(jobs).where(jobs.c.job_id == job_id)
        if only_if_not_terminal:
            q = q.where(jobs.c.state.not_in(TERMINAL))
        with self.db.session() as s:
            return s.execute(q.values(**values)).rowcount > 0

    def claim(self, job_id: str, external_id: str) -> bool:
        """queued → running, once (two dispatchers never both start a job)."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            res = s.execute(
                update(jobs)
                .where(jobs.c.job_id == job_id, jobs.c.state == QUEUED)
                .values(state=RUNNING, phase="starting", external_id=external_id, updated_at=now)
            )
            return res.rowcount > 0


class Runner(Protocol):
    """Where jobs run. `start` must not block for the job; `cancel` stops it if it runs there."""

    name: str

    def start(self, job: Job) -> None: ...
    def cancel(self, job: Job) -> None: ...
    def close(self) -> None: ...


def kubernetes_block(project: KubernetesSpec | None, request: KubernetesSpec | None) -> KubernetesSpec | None:
    """The project's block with the fields a request gives replacing its own (a whole `resources`, say),
    checked again as one block (its cross-field rules hold for the result, not only for each part)."""
    if request is None:
        return project
    base = project.model_dump(mode="json", exclude_none=True) if project else {}
    try:
        return KubernetesSpec.model_validate({**base, **request.model_dump(mode="json", exclude_none=True)})
    except ValidationError as exc:
        raise JobSpecInvalid("; ".join(f"kubernetes.{p}" for p in problems_of(exc))) from None


class JobService:
    """The dataplane the transports call: no HTTP, gRPC or Kafka types here."""

    def __init__(  # type: ignore[no-untyped-def]
        self,
        store: JobStore,
        runners: dict[str, Runner],
        default_runner: str,
        snapshot_uri,
        projects: ProjectRegistry,
    ) -> None:
        self.store = store
        self.runners = runners
        self.default_runner = default_runner
        self._snapshot_uri = snapshot_uri  # snapshot_id → URI (raises SnapshotNotFound)
        self.projects = projects
        self._lock = threading.Lock()

    def submit(
        self,
        *,
        model: str,
        snapshot_id: str,
        model_family: str = "",
        hyperparameters: dict[str, str] | None = None,
        search_trials: int | None = None,
        search_rounds: int | None = None,
        budget_s: float = 0.0,
        runner: str = "",
        gpus: int = 0,
        combined_metric: str = "",
        job_id: str = "",
        project: str = "",
        kubernetes: KubernetesSpec | None = None,
    ) -> Job:
        """A job for a registered project (named by `project`, else by `model`: a project's model is
        named after it). What the request leaves out — family, hyperparameters, search, budget —
        comes from the project's spec; what it gives overrides the spec (`kubernetes` field by field).
        A runner with a `check(spec)` refuses what it cannot run before any job exists."""
        runner = runner or self.default_runner
        if runner not in self.runners:
            raise InvalidRequest(f"runner {runner!r} is not available; available: {sorted(self.runners)}")
        name = project or model
        if not name:
            raise InvalidRequest("name the project (or its model) to train")
        if model and model != name:
            raise InvalidRequest(f"project {name!r} serves the model {name!r}, not {model!r}")
        found = self.projects.get(name)
        ps = found.spec
        if gpus < 0:
            raise InvalidRequest("gpus must be >= 0")
        if kubernetes is not None and runner != "kubernetes":
            raise JobSpecInvalid(f"kubernetes: applies to the kubernetes runner, not {runner!r}")
        block = kubernetes_block(ps.kubernetes, kubernetes)
        gpus = gpus or (block.gpus if block and block.gpus else 0)
        spec = JobSpec(
            job_id=job_id or uuid.uuid4().hex[:16],
            model=name,
            model_family=model_family or ps.family_name(),
            snapshot_id=snapshot_id,
            snapshot_uri="",
            hyperparameters={**ps.model.hyperparameters, **(hyperparameters or {})},
            search_trials=ps.model.search.trials if search_trials is None else search_trials,
            search_rounds=(search_rounds or ps.model.search.rounds),
            budget_s=budget_s or ps.model.budget_s,
            runner=runner,
            gpus=gpus,
            combined_metric=combined_metric,
            project=name,
            project_version=found.version,
            project_spec=spec_json(ps),
            kubernetes=block.model_dump(mode="json", exclude_none=True) if block else {},
        ).validate()
        check = getattr(self.runners[runner], "check", None)
        if check is not None:
            check(spec)
        if not snapshot_id:
            fresh = getattr(self._snapshot_uri, "fresh", None)
            if fresh is None:
                raise InvalidRequest("snapshot_id is required (no lake configured to cut a fresh one)")
            spec.snapshot_id = fresh(f"training {name}", name)
        spec.snapshot_uri = self._snapshot_uri(spec.snapshot_id)
        job = self.store.create(spec)
        self.runners[runner].start(job)
        return self.store.get(job.job_id)

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        reconcile = getattr(self.runners.get(job.runner), "reconcile", None)
        if job.state == RUNNING and reconcile is not None:
            reconcile(job)  # a cluster-side failure the worker could not report (image pull, OOM, backoff)
            job = self.store.get(job_id)
        return job

    def logs(self, job_id: str, req: LogRequest, stop: threading.Event) -> JobLog:
        """The job's log from where it runs (its pod, the local worker's file), bounded by `req`."""
        if not 1 <= req.tail <= MAX_TAIL:
            raise InvalidRequest(f"tail: {req.tail} is not between 1 and {MAX_TAIL} lines")
        if not 1 <= req.max_bytes <= MAX_LOG_BYTES:
            raise InvalidRequest(f"max_bytes: {req.max_bytes} is not between 1 and {MAX_LOG_BYTES}")
        job = self.store.get(job_id)
        read = getattr(self.runners.get(job.runner), "logs", None)
        if read is None:
            raise JobLogUnavailable(
                f"job {job_id} ran on the {job.runner} runner, which this trainer does not have "
                f"(it has {sorted(self.runners)}): ask the trainer that ran it"
            )
        return read(job, req, stop)

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.done:
            raise JobConflict(f"job {job_id} already {job.state}")
        self.store.update(job_id, cancel_requested=True)
        if job.state == QUEUED:
            self.store.update(job_id, state=CANCELLED, phase="cancelled", reason="cancelled before it started")
        self.runners[job.runner].cancel(self.store.get(job_id))
        return self.store.get(job_id)

    def watch(self, job_id: str, stop: threading.Event, interval_s: float = 0.2) -> Iterator[Job]:
        """Yield the job whenever it changes, until it finishes (or `stop` is set)."""
        last = None
        while True:
            job = self.store.get(job_id)
            key = (job.state, job.phase, round(job.fraction, 4), job.message)
            if key != last:
                last = key
                yield job
            if job.done or stop.wait(interval_s):
                return

"""Kafka adapter: `flywheel.train.requests` (TrainRequest) → a submitted job, once per event id.

An empty snapshot_id asks the lake to cut a fresh snapshot first. A request the trainer can
never run (unknown model family, bad hyperparameters) is dead-lettered with the reason; a lake
that does not answer is our outage: the batch is retried, not dead-lettered.
"""

from __future__ import annotations

import logging

from services.events.consumer import Record, invalid_in_context
from services.storage import Database
from services.storage.ledger import record_new
from services.trainer.errors import InvalidRequest, JobNotFound, ProjectNotFound, SnapshotInvalid, SnapshotNotFound
from services.trainer.jobs import JobService
from services.trainer.snapshots import SnapshotResolver

log = logging.getLogger(__name__)

CONSUMER = "trainer.train-requests"


class TrainRequestHandler:
    def __init__(self, jobs: JobService, db: Database, resolver: SnapshotResolver) -> None:
        self._jobs = jobs
        self._db = db
        self._resolver = resolver

    def __call__(self, records: list[Record]) -> None:
        for rec in records:
            event = rec.event
            job_id = event.meta.event_id[:32]
            try:
                self._jobs.get(job_id)
                continue  # a replay: the job exists already
            except JobNotFound:
                pass
            try:
                project = self._jobs.projects.get(event.model)
            except ProjectNotFound as exc:
                raise invalid_in_context(rec, f"train request {event.meta.event_id}: {exc}") from None
            snapshot_id = event.snapshot_id or self._resolver.fresh(event.reason or "train request", project.name)
            try:
                job = self._jobs.submit(
                    model=event.model,
                    snapshot_id=snapshot_id,
                    model_family=event.model_family,
                    hyperparameters=dict(event.hyperparameters),
                    budget_s=event.budget_s,
                    job_id=job_id,
                )
            except (InvalidRequest, ProjectNotFound, SnapshotNotFound, SnapshotInvalid) as exc:
                raise invalid_in_context(rec, f"train request {event.meta.event_id}: {exc}") from None
            with self._db.session() as s:
                record_new(s, CONSUMER, [(event.meta.event_id, rec.topic, rec.partition, rec.offset)])
            log.info(
                "train request accepted",
                extra={"job_id": job.job_id, "model": event.model, "caused_by": event.caused_by},
            )

"""Domain objects ↔ protobuf messages (gRPC) and JSON (REST)."""

from __future__ import annotations

from services.genproto.flywheel.v1 import trainer_pb2 as pb
from services.trainer.jobs import Job
from services.trainer.registry import VersionRecord, timestamp

STATE = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}


def _numbers(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def job_pb(job: Job) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id,
        state=STATE[job.state],
        model=job.model,
        snapshot_id=job.snapshot_id,
        reason=job.reason,
        model_version=job.model_version,
        report_uri=job.report_uri,
        metrics=_numbers(job.metrics),
        phase=job.phase,
        fraction=job.fraction,
        runner=job.runner,
        model_family=job.model_family,
    )
    if job.created_at:
        msg.created_at.CopyFrom(timestamp(job.created_at))
    if job.finished_at:
        msg.finished_at.CopyFrom(timestamp(job.finished_at))
    return msg


def progress_pb(job: Job) -> pb.JobProgress:
    return pb.JobProgress(
        job_id=job.job_id,
        state=STATE[job.state],
        phase=job.phase,
        fraction=job.fraction,
        message=job.reason if job.state in ("failed", "cancelled") else job.message,
        metrics=_numbers(job.metrics),
    )


def version_pb(v: VersionRecord) -> pb.ModelVersion:
    msg = pb.ModelVersion(
        model=v.model,
        version=str(v.version),
        stage=v.stage,
        snapshot_id=v.snapshot_id,
        git_commit=v.git_commit,
        hyperparameters=v.hyperparameters,
        metrics=_numbers(v.metrics),
        artifacts=v.artifacts,
        lineage=v.lineage,
        model_family=v.model_family,
    )
    msg.created_at.CopyFrom(timestamp(v.created_at))
    return msg


def job_json(job: Job) -> dict:
    return {
        "job_id": job.job_id,
        "state": job.state,
        "model": job.model,
        "model_family": job.model_family,
        "snapshot_id": job.snapshot_id,
        "runner": job.runner,
        "phase": job.phase,
        "fraction": job.fraction,
        "message": job.message,
        "reason": job.reason,
        "metrics": job.metrics,
        "model_version": job.model_version,
        "report_uri": job.report_uri,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def version_json(v: VersionRecord) -> dict:
    return {
        "model": v.model,
        "version": str(v.version),
        "stage": v.stage,
        "model_family": v.model_family,
        "snapshot_id": v.snapshot_id,
        "git_commit": v.git_commit,
        "job_id": v.job_id,
        "hyperparameters": v.hyperparameters,
        "metrics": v.metrics,
        "artifacts": v.artifacts,
        "lineage": v.lineage,
        "project_version": v.project_version,
        "created_at": v.created_at.isoformat(),
    }

"""`python -m services.trainer.worker --job-id J`: run one job from the jobs table and report into it.

The same entry point runs as a local child process (the local runner) and inside a Kubernetes
Job's pod (under `torchrun --nproc-per-node N` for several GPUs: rank 0 reports, exports and
registers; the other ranks only train). SIGTERM (a cancel, or a pod being deleted) stops it
between epochs and marks the job cancelled.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from services.config import CommonSettings, describe_settings, load_settings
from services.events import EventProducer
from services.events.topics import MODELS
from services.storage import Database, ObjectStore
from services.telemetry import StopSignal, configure_logging
from services.trainer.errors import JobCancelled, TrainerError
from services.trainer.export import ExportOptions
from services.trainer.job_run import JobContext, git_commit, run_job
from services.trainer.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobStore
from services.trainer.registry import Registry, remote_publisher
from services.trainer.settings import TrainerSettings
from services.trainer.training.metrics import CombinedMetric

log = logging.getLogger("services.trainer.worker")

REPORTED = (
    "test_accuracy",
    "test_macro_f1",
    "test_combined",
    "val_accuracy",
    "train_accuracy",
    "baseline_best_test_combined",
    "export_int8_accuracy_change",
)


def run(job_id: str, common: CommonSettings, settings: TrainerSettings, stop: threading.Event, publish: bool) -> int:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    db = Database(common.resolved_database_url())
    store = JobStore(db)
    job = store.get(job_id)
    if rank == 0 and job.state == "queued":
        store.update(job_id, state=RUNNING, phase="starting", external_id=job.external_id or f"pid:{os.getpid()}")
    producer = (
        EventProducer(common.kafka_bootstrap, client_id=f"trainer-worker-{job_id}", **common.kafka_security())
        if publish and rank == 0
        else None
    )

    def emit(event) -> None:  # type: ignore[no-untyped-def]
        assert producer is not None
        producer.send(MODELS.name, event)
        producer.flush()

    registry = Registry(
        db,
        repository_uri=settings.model_repository.resolve().as_uri(),
        margin=settings.promotion_margin,
        publish=emit if producer is not None else None,
        remote=remote_publisher(settings.remote_model_repository, settings.model_repository),
    )
    last = {"t": 0.0, "phase": "", "cancel_checked": 0.0, "cancel": False}

    def progress(phase: str, fraction: float, message: str, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if rank != 0 or (phase == last["phase"] and now - last["t"] < 0.3 and fraction < 1.0):
            return
        last.update(t=now, phase=phase)
        store.update(job_id, phase=phase, fraction=fraction, message=message, metrics=metrics)

    def cancelled() -> bool:
        if stop.is_set():
            return True
        now = time.monotonic()
        if now - last["cancel_checked"] > 0.5:
            last["cancel_checked"] = now
            last["cancel"] = store.get(job_id).cancel_requested
        return bool(last["cancel"])

    reports = settings.reports_dir if str(settings.reports_dir) not in ("", ".") else common.home / "reports"
    ctx = JobContext(
        repository=settings.model_repository,
        reports=reports,
        registry=registry,
        combined=CombinedMetric.parse(settings.combined_metric),
        export=ExportOptions(exporter=settings.onnx_exporter),
        threads=settings.threads,
        git_commit=os.environ.get("FLYWHEEL_GIT_COMMIT") or git_commit(),
        read_object=ObjectStore(common.resolved_object_store_url()).get,
        progress=progress,
        cancelled=cancelled,
    )
    try:
        outcome = run_job(job.spec, ctx) if rank == 0 or world > 1 else None
    except JobCancelled:
        store.update(job_id, state=CANCELLED, phase="cancelled", reason="cancelled while running")
        log.info("job cancelled", extra={"job_id": job_id})
        return 0
    except TrainerError as exc:
        if rank == 0:
            store.update(job_id, state=FAILED, phase="failed", reason=str(exc))
        log.warning("job failed", extra={"job_id": job_id, "reason": str(exc)})
        return 1
    except Exception as exc:
        if rank == 0:
            store.update(job_id, state=FAILED, phase="failed", reason=f"internal error: {type(exc).__name__}: {exc}")
        log.exception("job crashed", extra={"job_id": job_id})
        return 1
    finally:
        db.close()
    if rank == 0 and outcome is not None:
        store.update(
            job_id,
            state=SUCCEEDED,
            phase="done",
            fraction=1.0,
            message=f"{job.model} v{outcome.version}",
            model_version=outcome.version,
            report_uri=outcome.report_uri,
            metrics={k: outcome.metrics[k] for k in REPORTED if k in outcome.metrics},
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.trainer.worker",
        description="Run one training job from the jobs table.",
        epilog=describe_settings(CommonSettings, TrainerSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--no-publish", action="store_true", help="do not emit ModelPublished")
    args = parser.parse_args(argv)
    common = load_settings(CommonSettings)
    settings = load_settings(TrainerSettings)
    configure_logging("trainer-worker", common.log_level)
    stop = StopSignal().install()
    return run(args.job_id, common, settings, stop.event, publish=not args.no_publish)


if __name__ == "__main__":
    sys.exit(main())

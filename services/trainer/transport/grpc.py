"""gRPC adapter (`flywheel.v1.Trainer`): convert, call the dataplane, convert back; one error table."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from services.genproto.flywheel.v1 import trainer_pb2 as pb
from services.genproto.flywheel.v1 import trainer_pb2_grpc
from services.trainer.jobs import JobService
from services.trainer.registry import Registry
from services.trainer.transport.codec import job_pb, progress_pb, version_pb
from services.trainer.transport.status import ERRORS
from services.transportkit.auth import GrpcCallerCheck
from services.transportkit.bootstrap import Security
from services.transportkit.grpc import StrictParsing, guarded

log = logging.getLogger(__name__)


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, jobs: JobService, registry: Registry, stop: threading.Event) -> None:
        self._jobs = jobs
        self._registry = registry
        self._stop = stop

    @guarded(ERRORS)
    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_pb(
            self._jobs.submit(
                model=request.model,
                snapshot_id=request.snapshot_id,
                model_family=request.model_family,
                hyperparameters=dict(request.hyperparameters),
                search_trials=request.search.trials if request.HasField("search") else None,
                search_rounds=request.search.rounds or None,
                budget_s=request.budget_s,
                runner=request.runner,
                gpus=request.gpus,
                combined_metric=request.combined_metric,
                project=request.project,
            )
        )

    @guarded(ERRORS)
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_pb(self._jobs.get(request.job_id))

    @guarded(ERRORS)
    def WatchJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobProgress]:
        self._jobs.get(request.job_id)  # NOT_FOUND before the stream starts
        stop = threading.Event()
        context.add_callback(stop.set)  # the client went away, or the server is stopping
        for job in self._jobs.watch(request.job_id, stop):
            yield progress_pb(job)

    @guarded(ERRORS)
    def CancelJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_pb(self._jobs.cancel(request.job_id))

    @guarded(ERRORS)
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(versions=[version_pb(v) for v in self._registry.list(request.model)])

    @guarded(ERRORS)
    def PromoteModel(self, request: pb.PromoteModelRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        return version_pb(self._registry.promote(request.model, request.version, request.stage, request.force))


def serve_grpc(servicer: TrainerServicer, host: str, port: int, security: Security) -> tuple[grpc.Server, int]:
    """The gRPC server, started; every RPC needs a trusted caller's credential."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"),
        interceptors=[GrpcCallerCheck(security.callers), StrictParsing()],
    )
    trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, server)
    bound = security.tls.add_port(server, f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"could not bind gRPC on {host}:{port}")
    server.start()
    return server, bound

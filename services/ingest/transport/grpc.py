"""gRPC adapter: `flywheel.v1.Ingest/SubmitLabels`, a client stream of RawLabel.

The whole stream is validated before anything is written (a bad label → INVALID_ARGUMENT with
`labels[i].field: reason`, nothing stored); then it is written in chunks of `max_batch`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures

import grpc

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2 as pb
from services.genproto.flywheel.v1 import ingest_pb2_grpc as pb_grpc
from services.ingest.errors import InvalidInput
from services.ingest.pipeline import IngestPipeline
from services.ingest.transport.raw_codec import from_raw
from services.ingest.transport.status import ERRORS
from services.transportkit.grpc import guarded

log = logging.getLogger(__name__)
MAX_STREAM = 100_000


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, pipeline: IngestPipeline, max_batch: int) -> None:
        self._pipeline = pipeline
        self._max_batch = max_batch

    @guarded(ERRORS)
    def SubmitLabels(
        self, request_iterator: Iterator[ev.RawLabel], context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        valid = []
        for i, raw in enumerate(request_iterator):
            if i >= MAX_STREAM:
                raise InvalidInput("labels", f"a stream holds at most {MAX_STREAM} labels")
            valid.extend(self._pipeline.validate([from_raw(raw, "grpc", where=f"labels[{i}]")]))
        event_ids: list[str] = []
        for start in range(0, len(valid), self._max_batch):
            event_ids += self._pipeline.submit_valid(valid[start : start + self._max_batch]).event_ids
        return pb.SubmitLabelsResponse(accepted=len(event_ids), event_ids=event_ids)


def serve_grpc(
    pipeline: IngestPipeline, host: str, port: int, max_batch: int, workers: int = 8
) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    pb_grpc.add_IngestServicer_to_server(IngestServicer(pipeline, max_batch), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind gRPC on {host}:{port}")
    server.start()
    return server, bound

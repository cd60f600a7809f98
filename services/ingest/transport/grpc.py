"""gRPC adapter: `flywheel.v1.Ingest/SubmitLabels`, a client stream of RawLabel.

The whole stream is validated before anything is written (a bad label → INVALID_ARGUMENT with
`labels[i].field: reason`, nothing stored); then it is written in chunks of `max_batch`.

A stream costs a worker thread and holds its labels until it ends, so each is bounded
(`StreamLimits`): labels and bytes (RESOURCE_EXHAUSTED past either), a longest silence between
two labels and a longest duration (the stream is cancelled past either, by `StreamWatch`), and
the server takes at most as many streams as it has workers (RESOURCE_EXHAUSTED beyond): an idle
or slow caller can neither fill the memory nor keep every thread waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc

from services.genproto.flywheel.v1 import events_pb2 as ev
from services.genproto.flywheel.v1 import ingest_pb2 as pb
from services.genproto.flywheel.v1 import ingest_pb2_grpc as pb_grpc
from services.ingest.errors import StreamCancelled, StreamTooLarge
from services.ingest.pipeline import IngestPipeline
from services.ingest.transport.raw_codec import from_raw
from services.ingest.transport.status import ERRORS
from services.transportkit.auth import GrpcCallerCheck
from services.transportkit.bootstrap import Security
from services.transportkit.grpc import StrictParsing, guarded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamLimits:
    max_labels: int = 20_000
    max_bytes: int = 64 << 20
    idle_s: float = 10.0  # longest wait for the next label
    max_s: float = 300.0  # longest stream


class _Watched:
    def __init__(self, context: grpc.ServicerContext, now: float) -> None:
        self.context = context
        self.started = now
        self.last = now
        self.cancelled = ""


class StreamWatch:
    """Cancels streams that stay silent longer than `idle_s` or last longer than `max_s` (one thread for all)."""

    def __init__(self, limits: StreamLimits, tick_s: float = 0.5) -> None:
        self._limits = limits
        self._tick_s = tick_s
        self._streams: set[_Watched] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-watch", daemon=True)
        self._thread.start()

    def open(self, context: grpc.ServicerContext) -> _Watched:
        stream = _Watched(context, time.monotonic())
        with self._lock:
            self._streams.add(stream)
        return stream

    def close(self, stream: _Watched) -> None:
        with self._lock:
            self._streams.discard(stream)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            now = time.monotonic()
            with self._lock:
                streams = list(self._streams)
            for s in streams:
                if now - s.last > self._limits.idle_s:
                    s.cancelled = f"no label for {self._limits.idle_s:g} s"
                elif now - s.started > self._limits.max_s:
                    s.cancelled = f"the stream ran longer than {self._limits.max_s:g} s"
                else:
                    continue
                log.info("cancelling a label stream", extra={"reason": s.cancelled})
                self.close(s)
                s.context.cancel()  # the handler's next() raises; its thread is free again


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, pipeline: IngestPipeline, max_batch: int, limits: StreamLimits, watch: StreamWatch) -> None:
        self._pipeline = pipeline
        self._max_batch = max_batch
        self._limits = limits
        self._watch = watch

    @guarded(ERRORS)
    def SubmitLabels(
        self, request_iterator: Iterator[ev.RawLabel], context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        limits = self._limits
        valid = []
        size = 0
        stream = self._watch.open(context)
        try:
            for i, raw in enumerate(request_iterator):
                stream.last = time.monotonic()
                size += raw.ByteSize()
                if i >= limits.max_labels:
                    raise StreamTooLarge("labels", f"a stream holds at most {limits.max_labels} labels")
                if size > limits.max_bytes:
                    raise StreamTooLarge("labels", f"a stream holds at most {limits.max_bytes} bytes of labels")
                valid.extend(self._pipeline.validate([from_raw(raw, "grpc", where=f"labels[{i}]")]))
        except grpc.RpcError:  # the call was cancelled while we waited for its next label
            raise StreamCancelled(stream.cancelled or "the caller cancelled the stream") from None
        finally:
            self._watch.close(stream)
        event_ids: list[str] = []
        for start in range(0, len(valid), self._max_batch):
            event_ids += self._pipeline.submit_valid(valid[start : start + self._max_batch]).event_ids
        return pb.SubmitLabelsResponse(accepted=len(event_ids), event_ids=event_ids)


def serve_grpc(
    pipeline: IngestPipeline,
    host: str,
    port: int,
    max_batch: int,
    security: Security,
    limits: StreamLimits | None = None,
    workers: int = 8,
) -> tuple[grpc.Server, int, StreamWatch]:
    """The gRPC server, started (every RPC needs a trusted caller: label producers present their token);
    stop it, then the returned watch."""
    limits = limits or StreamLimits()
    watch = StreamWatch(limits)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[GrpcCallerCheck(security.callers), StrictParsing()],
        # One stream per worker thread; one more is refused at once (RESOURCE_EXHAUSTED), never queued.
        maximum_concurrent_rpcs=workers,
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    pb_grpc.add_IngestServicer_to_server(IngestServicer(pipeline, max_batch, limits, watch), server)
    bound = security.tls.add_port(server, f"{host}:{port}")
    if bound == 0:
        watch.stop()
        raise RuntimeError(f"could not bind gRPC on {host}:{port}")
    server.start()
    return server, bound, watch

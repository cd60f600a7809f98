"""Flywheel model server: KServe v2 / Open Inference Protocol over HTTP and gRPC, Triton-layout
model repository, SLO-aware adaptive batching, hot swap.

`python -m services.modelserver` (or `flywheel serve modelserver`). Settings → repository, served
models, data plane → gRPC and HTTP servers on one event loop → load every model → serve until
SIGTERM → unready, answer what still comes with `Connection: close`, finish in-flight requests, exit 0
within the drain time (services/transportkit/drain.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import threading
import time
from pathlib import Path

from services.config import CommonSettings, ConfigError
from services.modelserver import remote as remote_repository
from services.modelserver.dataplane import DataPlane
from services.modelserver.repository import ModelRepository
from services.modelserver.served import ServedModels, ServingOptions
from services.modelserver.settings import ModelServerSettings
from services.modelserver.transport.compiled import choose_front
from services.modelserver.transport.grpc import NOT_SERVING, SERVING, start_grpc_front
from services.modelserver.transport.rest import build_asgi
from services.storage.s3 import S3Unavailable
from services.telemetry import Readiness
from services.transportkit import bootstrap
from services.transportkit.drain import Drain, drain_http, remaining
from services.transportkit.listener import http_listener
from services.transportkit.looplag import LoopLag

log = logging.getLogger("services.modelserver")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bootstrap.service_parser("modelserver", __doc__, ModelServerSettings, host=True)
    parser.add_argument("--model-repository", type=Path, help="model repository folder")
    parser.add_argument("--batching", choices=["adaptive", "off"], help="batching policy")
    parser.add_argument("--default-slo-ms", type=float, help="deadline of requests that bring none")
    parser.add_argument("--queue-bound", type=int, help="queued requests per model version")
    parser.add_argument("--max-request-bytes", type=int, help="largest request body / tensor")
    parser.add_argument("--intra-op-threads", type=int, help="runtime threads per instance")
    parser.add_argument("--instances", type=int, help="instances per model version (0 = config.pbtxt)")
    parser.add_argument("--inline-below-us", type=float, help="run batches expected to be this quick on the loop")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], help="event loop implementation")
    parser.add_argument("--grpc-front", choices=["auto", "compiled", "aio"], help="gRPC front implementation")
    parser.add_argument(
        "--consume-model-events", action=argparse.BooleanOptionalAction, default=None, help="follow flywheel.models"
    )
    parser.add_argument("--remote-repository", help="s3://bucket/prefix to pull checked versions from")
    parser.add_argument("--remote-poll-s", type=float, help="how often the remote repository is polled")
    parser.add_argument("--remote-latest-versions", type=int, help="newest published versions per model to pull")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    settings, common, stop = bootstrap.start("modelserver", ModelServerSettings, parse_args(argv))
    security = bootstrap.security(common)
    remote = None
    if settings.remote_repository:
        try:
            remote = remote_repository.RemoteRepository(
                settings.remote_repository, settings.model_repository, settings.remote_latest_versions
            )
        except S3Unavailable as exc:
            raise ConfigError(f"cannot start the model server: {exc}") from None
    front = choose_front(settings.grpc_front, security.tls.serving)
    return bootstrap.run(lambda: serve(settings, common, security, stop.event, remote, front), settings.event_loop)


async def serve(
    settings: ModelServerSettings,
    common: CommonSettings,
    security: bootstrap.Security,
    stop: threading.Event,
    remote: remote_repository.RemoteRepository | None = None,
    front: str = "aio",
) -> int:
    loop = asyncio.get_running_loop()
    models = ServedModels(
        ModelRepository(settings.model_repository),
        ServingOptions(
            adaptive=settings.batching == "adaptive",
            queue_bound=settings.queue_bound,
            intra_op_threads=settings.intra_op_threads,
            instances=settings.instances,
            default_slo_s=settings.default_slo_ms / 1000,
            inline_below_s=settings.inline_below_us / 1e6,
        ),
    )
    loop_lag = LoopLag(settings.max_loop_lag_ms / 1000)
    loop_lag.start()
    dataplane = DataPlane(models, loop_lag)
    readiness = Readiness()
    readiness.add("models", dataplane.readiness)

    app = build_asgi(dataplane, readiness, settings.max_request_bytes, security.callers)
    drain = Drain(app)
    grpc_server, health = await start_grpc_front(
        front,
        dataplane,
        settings.max_request_bytes,
        security.callers,
        security.tls,
        (settings.host, settings.grpc_port),
        on_call=drain.note_request,  # gRPC calls keep the drain from settling, on either front
    )
    grpc_port = grpc_server.port
    await health.set("", NOT_SERVING)

    sock = http_listener(settings.host, settings.http_port)
    http, http_task = bootstrap.uvicorn_server(drain, sock, security.tls)
    log.info(
        "listening",
        extra={
            "http_port": sock.getsockname()[1],
            "grpc_port": grpc_port,
            "grpc_front": front,
            "repository": str(settings.model_repository),
        },
    )

    if remote is not None:  # what is published now is served from the start
        await remote_repository.apply(remote, models)
    dataplane.startup_failures = await models.load_all()
    # What start-up made (modules, configs, sessions) lives as long as the process: keep the
    # collector from walking it again in every full collection while requests wait.
    gc.collect()
    gc.freeze()
    dataplane.started = True
    events_stop = threading.Event()
    events_thread = None
    if settings.consume_model_events:
        from services.modelserver.transport.model_events import start_model_events

        consume, events_thread = start_model_events(
            common.kafka_bootstrap, settings.events_group, models, loop, events_stop, common.kafka_security()
        )
        readiness.add("model_events", consume.healthy)

    async def follow_readiness(ready: bool) -> None:
        await health.set("", SERVING if ready else NOT_SERVING)

    dataplane.on_readiness.append(follow_readiness)
    remote_stop = threading.Event()
    remote_task = None
    if remote is not None:
        remote_task = loop.create_task(
            remote_repository.follow(remote, models, settings.remote_poll_s, remote_stop), name="remote-repository"
        )
    await dataplane.readiness_changed()
    log.info("serving", extra={"models": models.names(), "failed": dataplane.startup_failures})

    await asyncio.to_thread(stop.wait)
    log.info("draining")
    until = time.monotonic() + settings.drain_timeout_s
    # Unready (readiness 503, gRPC health NOT_SERVING) but still serving: see transportkit/drain.py.
    dataplane.stopping = True
    await dataplane.readiness_changed()
    events_stop.set()
    remote_stop.set()
    # gRPC serves through the HTTP drain, then stops taking RPCs; in-flight ones (their batches) finish.
    await drain_http(http, drain, until)
    await asyncio.gather(grpc_server.stop(remaining(until)), http_task)
    if remote_task is not None:
        await remote_task
    if events_thread is not None:
        await asyncio.to_thread(events_thread.join, max(remaining(until), 1.0))
    await models.close()
    loop_lag.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

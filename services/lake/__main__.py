"""Flywheel lake: Kafka labels and predictions → partitioned Parquet; DuckDB aggregates; versioned
dataset snapshots over gRPC and HTTP.

`python -m services.lake`. Settings → build objects → serve. SIGTERM stops the consume loop after
its current batch is written and committed, then stops the HTTP and gRPC servers; exit status 0.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Callable

from confluent_kafka import KafkaException

from services.config import CommonSettings, ConfigError, load_settings
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, ensure_topics
from services.events.topics import DEADLETTER, PROJECTS, topic
from services.lake.aggregates import Aggregates
from services.lake.dataplane import LakeDataPlane
from services.lake.manifest import Manifest
from services.lake.settings import LakeSettings, resolved_root
from services.lake.sink import LakeSink
from services.lake.snapshots import Snapshots
from services.lake.store import LakeStore
from services.lake.transport.grpc import serve_grpc
from services.lake.transport.rest import build_asgi
from services.projects.catalog import Catalog, CatalogFollower
from services.telemetry import Readiness, StopSignal, configure_logging, serve_http_in_thread
from services.transportkit import bootstrap

log = logging.getLogger("services.lake")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bootstrap.service_parser("lake", __doc__, LakeSettings)
    parser.add_argument("--root", help="lake root URL (overrides FLYWHEEL_LAKE_ROOT)")
    parser.add_argument("--group", help="overrides FLYWHEEL_LAKE_GROUP")
    return parser.parse_args(argv)


def periodic(stop: threading.Event, every_s: float, name: str, work: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        while not stop.wait(every_s):
            try:
                work()
            except Exception:
                log.exception(f"{name} failed; retrying next round")

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        common = load_settings(CommonSettings)
        settings = load_settings(LakeSettings, **bootstrap.given(args))
        topics = [topic(name.strip()) for name in settings.topics.split(",") if name.strip()]
    except KeyError as exc:
        raise ConfigError(f"invalid configuration:\n  FLYWHEEL_LAKE_TOPICS: {exc.args[0]}") from None
    configure_logging("lake", common.log_level)
    security = bootstrap.security(common)
    faulthandler.enable()  # a native crash still leaves every thread's stack in the log
    if hasattr(signal, "SIGUSR1"):  # and `kill -USR1` dumps them on demand, e.g. to see a stall
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = StopSignal().install()

    store = LakeStore(resolved_root(settings, common.home))
    manifest = Manifest.load(store)
    manifest.reconcile()
    lock = threading.RLock()
    sink = LakeSink(manifest, lock, settings.compact_min_files, settings.compact_small_rows)
    aggregates = Aggregates(store, lambda: manifest, lock)
    catalog = Catalog()
    follower = CatalogFollower(common.kafka_bootstrap, catalog, stop.event, security=common.kafka_security())
    dataplane = LakeDataPlane(
        aggregates, Snapshots(store, aggregates, settings.code_version, catalog, settings.default_project)
    )

    try:
        ensure_topics(
            common.kafka_bootstrap, [*topics, DEADLETTER, PROJECTS], timeout_s=10, security=common.kafka_security()
        )
    except Exception as exc:  # noqa: BLE001 - the loop waits for the broker; readiness reports it
        log.warning("could not ensure topics", extra={"error": str(exc)})
    config = ConsumerConfig(
        bootstrap=common.kafka_bootstrap,
        group=settings.group,
        topics=[t.name for t in topics],
        max_batch=settings.flush_rows,
        poll_timeout_s=settings.flush_interval_s,
        extra=common.kafka_security(),
        tag_log=True,  # the manifest's offsets are positions in one broker log
    )
    deadletter = EventProducer(common.kafka_bootstrap, client_id=settings.group, **common.kafka_security())
    current: list[ConsumeLoop] = []

    def consume() -> None:
        """Run the consume loop; a broker error that escapes it (a failed commit while the broker
        restarts) starts a fresh loop: the manifest makes the replayed batch harmless."""
        while not stop.is_set():
            loop = ConsumeLoop(config, sink.handle, deadletter, stop.event)
            current[:] = [loop]
            try:
                loop.run()
            except KafkaException as exc:
                log.warning("consume loop failed; restarting it", extra={"error": str(exc)})
                stop.wait(1.0)

    readiness = Readiness()
    readiness.add("consumer", lambda: current[0].healthy() if current else (False, "starting"))
    readiness.add("lake", lambda: (store.exists(""), f"lake root {store.url} not reachable"))
    readiness.add("projects", follower.healthy)
    projects = threading.Thread(target=follower.load_and_follow, name="projects")
    projects.start()

    http = serve_http_in_thread(
        build_asgi(dataplane, readiness, security.callers),
        settings.host,
        settings.http_port,
        ssl=security.tls.uvicorn_options(),
    )
    grpc_server, grpc_port = serve_grpc(dataplane, settings.host, settings.grpc_port, security)
    consumer = threading.Thread(target=consume, name="consume")
    consumer.start()
    workers = [
        periodic(stop.event, settings.compact_interval_s, "compact", sink.compact),
        periodic(stop.event, settings.gauges_interval_s, "gauges", dataplane.refresh_gauges),
    ]
    log.info(
        "lake serving",
        extra={"root": store.url, "http_port": http.port, "grpc_port": grpc_port, "topics": [t.name for t in topics]},
    )
    status = 0
    while not stop.wait(0.5):
        if not consumer.is_alive():
            log.error("consume loop died")
            status = 1
            break
    stop.event.set()
    consumer.join(60)
    for worker in workers:  # a compaction or a gauge query in flight finishes before exit
        worker.join(60)
    projects.join(10)
    grpc_server.stop(5).wait(5)
    http.stop()
    deadletter.flush(10)
    log.info("lake stopped", extra={"status": status})
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Flywheel labeling ingest: HTTP, Label Studio webhooks, gRPC and Kafka in; flywheel.labels out.

`python -m services.ingest`. Settings() → migrate → build objects → serve HTTP, gRPC and the
flywheel.labels.raw loop; SIGTERM stops intake, finishes in-flight batches, flushes the outbox and
exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from confluent_kafka.admin import AdminClient

from services.events import EventProducer, ensure_topics
from services.ingest.fetching import Fetcher, FetchLimits, FetchQueue, FetchWorker
from services.ingest.pipeline import IngestPipeline
from services.ingest.settings import IngestSettings
from services.ingest.tables import MIGRATIONS
from services.ingest.transport.grpc import StreamLimits, serve_grpc
from services.ingest.transport.kafka_loop import build_consume_loop
from services.ingest.transport.rest import build_asgi
from services.projects.catalog import Catalog, CatalogFollower
from services.storage import Database, ObjectStore, migrate
from services.telemetry import Readiness, serve_http_in_thread
from services.transportkit import bootstrap

log = logging.getLogger("services.ingest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bootstrap.service_parser("ingest", __doc__, IngestSettings, host=True)
    parser.add_argument("--default-project", help="overrides FLYWHEEL_INGEST_DEFAULT_PROJECT")
    parser.add_argument(
        "--no-consume-raw",
        action="store_const",
        const=False,
        dest="consume_raw",
        help="do not consume flywheel.labels.raw",
    )
    return parser.parse_args(argv)


def broker_check(admin: AdminClient) -> tuple[bool, str]:
    try:
        admin.list_topics(timeout=2)
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports the reason
        return False, f"broker unreachable: {exc}"


def main(argv: list[str] | None = None) -> int:
    settings, common, stop = bootstrap.start("ingest", IngestSettings, parse_args(argv))
    security = bootstrap.security(common)

    db_url = common.resolved_database_url()
    migrate(db_url, [MIGRATIONS])
    db = Database(db_url)
    objects = ObjectStore(common.resolved_object_store_url())
    kafka = common.kafka_security()
    ensure_topics(common.kafka_bootstrap, security=kafka)
    producer = EventProducer(common.kafka_bootstrap, client_id="ingest", **kafka)
    admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap, **kafka})
    catalog = Catalog()
    follower = CatalogFollower(common.kafka_bootstrap, catalog, stop.event, security=kafka)
    follower.load()  # every project published so far, before a label is taken
    pipeline = IngestPipeline(db, objects, producer, catalog, settings.default_project, settings.outbox_keep_s)
    if settings.outbox_keep_s:
        pipeline.refresh_broker()  # acknowledged by another broker (a restarted memory one): re-sent now
    pipeline.republish_outbox()  # whatever a crash left between commit and acknowledgement
    fetch_queue = FetchQueue(db)
    fetcher = Fetcher(
        FetchLimits(settings.fetch_max_bytes, settings.fetch_timeout_s, settings.fetch_max_redirects),
        settings.label_studio_url,
        settings.label_studio_token,
        settings.label_studio_refresh_token,
        settings.allowed_hosts(),
    )
    fetch_worker = FetchWorker(
        fetch_queue,
        fetcher,
        pipeline,
        producer,
        attempts=settings.fetch_attempts,
        backoff_s=settings.fetch_backoff_s,
        workers=settings.fetch_workers,
    )

    readiness = Readiness()
    readiness.add("projects", follower.healthy)
    readiness.add("broker", lambda: broker_check(admin))
    readiness.add("database", db.ping)
    readiness.add("object_store", objects.ping)

    threads: list[threading.Thread] = [
        threading.Thread(target=follower.run, name="projects"),
        threading.Thread(target=fetch_worker.run, args=(stop.event,), name="fetcher"),
    ]
    consumer: threading.Thread | None = None
    if settings.consume_raw:
        loop = build_consume_loop(
            pipeline, common.kafka_bootstrap, settings.consumer_group, producer, stop.event, settings.raw_batch, kafka
        )
        readiness.add("raw_consumer", loop.healthy)
        consumer = threading.Thread(target=loop.run, name="raw-consumer")
        threads.append(consumer)
    threads.append(
        threading.Thread(target=pipeline.run_outbox_relay, args=(stop.event, settings.outbox_retry_s), name="outbox")
    )
    for t in threads:
        t.start()

    app = build_asgi(
        pipeline,
        readiness,
        settings.webhook_token,
        settings.max_body_bytes,
        settings.max_batch,
        security.callers,
        fetch_queue,
        fetch_worker,
    )
    http = serve_http_in_thread(app, settings.host, settings.http_port, ssl=security.tls.uvicorn_options())
    limits = StreamLimits(
        settings.stream_max_labels, settings.stream_max_bytes, settings.stream_idle_s, settings.stream_max_s
    )
    grpc_server, grpc_port, stream_watch = serve_grpc(
        pipeline, settings.host, settings.grpc_port, settings.max_batch, security, limits, settings.grpc_workers
    )
    log.info(
        "ingest serving",
        extra={
            "http_port": http.port,
            "grpc_port": grpc_port,
            "projects": [p.name for p in catalog.latest()],
            "default_project": settings.default_project,
            "consume_raw": settings.consume_raw,
        },
    )

    status = 0
    while not stop.wait(0.5):
        if consumer is not None and not consumer.is_alive():
            # Readiness already says so; exiting lets the supervisor (or Kubernetes) start a fresh one.
            log.error("the flywheel.labels.raw consumer died; stopping")
            status = 1
            break
    stop.event.set()
    log.info("stopping: draining in-flight requests")
    grpc_server.stop(grace=10).wait(15)
    stream_watch.stop()
    http.stop(timeout=15)
    for t in threads:
        t.join(30)
    pipeline.republish_outbox()
    pipeline.close()
    producer.close()
    db.close()
    log.info("ingest stopped", extra={"status": status})
    return status


if __name__ == "__main__":
    sys.exit(main())

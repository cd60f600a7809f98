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
from services.ingest.pipeline import IngestPipeline
from services.ingest.settings import IngestSettings
from services.ingest.tables import MIGRATIONS
from services.ingest.transport.grpc import serve_grpc
from services.ingest.transport.kafka_loop import build_consume_loop
from services.ingest.transport.rest import build_app
from services.storage import Database, ObjectStore, migrate
from services.telemetry import Readiness, serve_http_in_thread
from services.transportkit import bootstrap

log = logging.getLogger("services.ingest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bootstrap.service_parser("ingest", __doc__, IngestSettings, host=True)
    parser.add_argument("--labels", help="overrides FLYWHEEL_INGEST_LABELS (comma-separated)")
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

    db_url = common.resolved_database_url()
    migrate(db_url, [MIGRATIONS])
    db = Database(db_url)
    objects = ObjectStore(common.resolved_object_store_url())
    ensure_topics(common.kafka_bootstrap)
    producer = EventProducer(common.kafka_bootstrap, client_id="ingest")
    admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
    pipeline = IngestPipeline(
        db, objects, producer, settings.allowed_labels(), settings.label_schema_version, settings.outbox_keep_s
    )
    if settings.outbox_keep_s:
        pipeline.refresh_broker()  # acknowledged by another broker (a restarted memory one): re-sent now
    pipeline.republish_outbox()  # whatever a crash left between commit and acknowledgement

    readiness = Readiness()
    readiness.add("broker", lambda: broker_check(admin))
    readiness.add("database", db.ping)
    readiness.add("object_store", objects.ping)

    threads: list[threading.Thread] = []
    loop = None
    if settings.consume_raw:
        loop = build_consume_loop(
            pipeline, common.kafka_bootstrap, settings.consumer_group, producer, stop.event, settings.raw_batch
        )
        readiness.add("raw_consumer", loop.healthy)
        threads.append(threading.Thread(target=loop.run, name="raw-consumer"))
    threads.append(
        threading.Thread(target=pipeline.run_outbox_relay, args=(stop.event, settings.outbox_retry_s), name="outbox")
    )
    for t in threads:
        t.start()

    app = build_app(pipeline, readiness, settings.webhook_token, settings.max_body_bytes, settings.max_batch)
    http = serve_http_in_thread(app, settings.host, settings.http_port)
    grpc_server, grpc_port = serve_grpc(pipeline, settings.host, settings.grpc_port, settings.max_batch)
    log.info(
        "ingest serving",
        extra={
            "http_port": http.port,
            "grpc_port": grpc_port,
            "labels": settings.labels,
            "consume_raw": settings.consume_raw,
        },
    )

    stop.wait()
    log.info("stopping: draining in-flight requests")
    grpc_server.stop(grace=10).wait(15)
    http.stop(timeout=15)
    for t in threads:
        t.join(30)
    pipeline.republish_outbox()
    pipeline.close()
    producer.close()
    db.close()
    log.info("ingest stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

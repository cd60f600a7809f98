"""A consumer process for the crash tests: labels from Kafka into a real SQL table.

It uses the real events library and the idempotency ledger, exactly like a service would:
the handler writes rows and ledger entries in one transaction, then the loop commits offsets.
Run: python -m tests.support.ledger_consumer BOOTSTRAP GROUP DATABASE_URL
"""

from __future__ import annotations

import sys

from sqlalchemy import Column, Integer, MetaData, String, Table

from services.events import ConsumeLoop, ConsumerConfig, EventProducer
from services.events.consumer import Record
from services.events.topics import LABELS
from services.storage import Database, migrate
from services.storage.ledger import record_new
from services.telemetry import StopSignal, configure_logging

metadata = MetaData()
labels = Table(
    "test_labels",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("example_id", String(64), nullable=False),
    Column("label", String(32), nullable=False),
    Column("offset", Integer, nullable=False),
)


def main() -> int:
    bootstrap, group, url = sys.argv[1:4]
    configure_logging("ledger-consumer", "WARNING")
    migrate(url)
    db = Database(url)
    metadata.create_all(db.engine)
    stop = StopSignal().install()

    def handle(records: list[Record]) -> None:
        with db.session() as session:
            new = record_new(session, group, [(r.event.meta.event_id, r.topic, r.partition, r.offset) for r in records])
            # A batch can hold the same event twice (a producer replay): keep the first.
            rows = {
                r.event.meta.event_id: {
                    "event_id": r.event.meta.event_id,
                    "example_id": r.event.example_id,
                    "label": r.event.label,
                    "offset": r.offset,
                }
                for r in reversed(records)
                if r.event.meta.event_id in new
            }
            if rows:
                session.execute(labels.insert(), list(rows.values()))

    loop = ConsumeLoop(
        ConsumerConfig(bootstrap=bootstrap, group=group, topics=[LABELS.name], max_batch=200),
        handle,
        EventProducer(bootstrap, client_id=group),
        stop.event,
    )
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

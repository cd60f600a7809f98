"""The idempotency ledger: remember which event ids a consumer has applied.

`record_new()` inserts the ids it has not seen inside the caller's transaction and returns
only those, so the caller applies each event once however often Kafka redelivers it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import Session

metadata = MetaData()
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("consumer", String(128), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("processed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


def record_new(session: Session, consumer: str, entries: Iterable[tuple[str, str, int, int]]) -> set[str]:
    """entries: (event_id, topic, partition, offset). Returns the event ids not seen before."""
    rows = {e[0]: e for e in entries}
    if not rows:
        return set()
    seen: set[str] = set()
    ids = list(rows)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        seen |= set(
            session.scalars(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer == consumer, processed_events.c.event_id.in_(chunk)
                )
            )
        )
    new = [rows[i] for i in ids if i not in seen]
    if new:
        session.execute(
            processed_events.insert(),
            [{"event_id": e, "consumer": consumer, "topic": t, "partition": p, "offset": o} for e, t, p, o in new],
        )
    return {e[0] for e in new}

"""Ingest's SQL tables (created by the Alembic branch in services/ingest/migrations).

`ingest_labels` holds one metadata row per annotation (or per example when a producer has no
annotation ids); `ingest_outbox` holds each LabelEvent from the SQL commit until the broker
acknowledged it, so a crash between the two re-publishes instead of losing the event; then, for
`outbox_keep_s`, with the time and the broker (cluster id) of the acknowledgement, so events a
broker on memory storage lost in a restart are sent again to the new one.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, LargeBinary, MetaData, String, Table

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

metadata = MetaData()

labels = Table(
    "ingest_labels",
    metadata,
    Column("record_key", String(300), primary_key=True),
    Column("example_id", String(256), nullable=False, index=True),
    Column("annotation_id", String(256), nullable=False),
    Column("object_uri", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("annotator", String(256), nullable=False),
    Column("source", String(32), nullable=False),
    Column("label_schema_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("last_event_id", String(64), nullable=False),
)

outbox = Table(
    "ingest_outbox",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False, index=True),
    Column("published_ms", BigInteger, nullable=True, index=True),
    Column("published_to", String(255), nullable=True),
)

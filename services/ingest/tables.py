"""Ingest's SQL tables (created by the Alembic branch in services/ingest/migrations).

`ingest_labels` holds one metadata row per annotation (or per example when a producer has no
annotation ids); `ingest_outbox` holds each LabelEvent from the SQL commit until the broker
acknowledged it, so a crash between the two re-publishes instead of losing the event; then, for
`outbox_keep_s`, with the time and the broker (cluster id) of the acknowledgement, so events a
broker on memory storage lost in a restart are sent again to the new one.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, LargeBinary, MetaData, String, Table, Text

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

metadata = MetaData()

labels = Table(
    "ingest_labels",
    metadata,
    Column("record_key", String(400), primary_key=True),
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
    Column("project", String(64), nullable=False, default=""),
    Column("content_type", String(64), nullable=False, default=""),
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

# Label Studio tasks whose input is a reference (`/data/upload/…`, `s3://…`, an allowed URL): the
# webhook answers at once and the fetcher (fetching.py) reads the data later, retrying; `label` is
# the label as parsed (JSON of its LabelInput fields). A fetch that cannot succeed is dead-lettered.
fetches = Table(
    "ingest_fetches",
    metadata,
    Column("fetch_id", String(64), primary_key=True),  # deterministic: a replayed webhook queues nothing new
    Column("record_key", String(400), nullable=False, index=True),
    Column("project", String(64), nullable=False),
    Column("uri", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),  # pending, done, dead, superseded
    Column("attempts", Integer, nullable=False),
    Column("next_ms", BigInteger, nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

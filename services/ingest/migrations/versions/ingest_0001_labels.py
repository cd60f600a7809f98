"""Ingest branch: label metadata and the publish outbox.

Revision ID: ingest_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0001"
down_revision = None
branch_labels = ("ingest",)
depends_on = "base_0001"


def upgrade() -> None:
    op.create_table(
        "ingest_labels",
        sa.Column("record_key", sa.String(300), primary_key=True),
        sa.Column("example_id", sa.String(256), nullable=False),
        sa.Column("annotation_id", sa.String(256), nullable=False),
        sa.Column("object_uri", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("label_schema_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("last_event_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_ingest_labels_example_id", "ingest_labels", ["example_id"])
    op.create_table(
        "ingest_outbox",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ingest_outbox_created_ms", "ingest_outbox", ["created_ms"])


def downgrade() -> None:
    op.drop_table("ingest_outbox")
    op.drop_table("ingest_labels")

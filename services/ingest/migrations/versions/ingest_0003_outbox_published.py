"""Ingest branch: acknowledged events stay in the outbox for a while, with the broker that took them.

Revision ID: ingest_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingest_outbox", sa.Column("published_ms", sa.BigInteger, nullable=True))
    op.add_column("ingest_outbox", sa.Column("published_to", sa.String(255), nullable=True))
    op.create_index("ix_ingest_outbox_published_ms", "ingest_outbox", ["published_ms"])


def downgrade() -> None:
    op.drop_index("ix_ingest_outbox_published_ms", "ingest_outbox")
    op.drop_column("ingest_outbox", "published_to")
    op.drop_column("ingest_outbox", "published_ms")

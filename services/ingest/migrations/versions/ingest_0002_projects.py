"""Ingest branch: labels belong to a project; the stored original's media type; Label Studio fetches.

Revision ID: ingest_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_labels") as batch:
        batch.alter_column("record_key", type_=sa.String(400), existing_nullable=False)
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("content_type", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "ingest_fetches",
        sa.Column("fetch_id", sa.String(64), primary_key=True),
        sa.Column("record_key", sa.String(400), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_ms", sa.BigInteger, nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_fetches")
    with op.batch_alter_table("ingest_labels") as batch:
        batch.drop_column("content_type")
        batch.drop_column("project")
        batch.alter_column("record_key", type_=sa.String(300), existing_nullable=False)

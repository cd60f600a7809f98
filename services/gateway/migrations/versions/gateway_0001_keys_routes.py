"""Gateway branch: API keys (hashed) and model routes (aliases, canary weight, shadow).

Revision ID: gateway_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0001"
down_revision = None
branch_labels = ("gateway",)
depends_on = "base_0001"


def upgrade() -> None:
    op.create_table(
        "gateway_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(255), nullable=False),
        sa.Column("rate_per_s", sa.Float, nullable=True),
        sa.Column("burst", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "gateway_routes",
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("production", sa.String(32), nullable=False, server_default=""),
        sa.Column("canary", sa.String(32), nullable=False, server_default=""),
        sa.Column("canary_weight", sa.Float, nullable=False, server_default="0"),
        sa.Column("shadow", sa.String(32), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_routes")
    op.drop_table("gateway_api_keys")

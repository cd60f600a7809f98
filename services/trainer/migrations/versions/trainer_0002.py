"""Trainer branch: project specs (versioned) and where each model version came from (lineage).

Revision ID: trainer_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "trainer_0002"
down_revision = "trainer_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trainer_projects",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("trainer_model_versions") as batch:
        batch.add_column(sa.Column("lineage", sa.String(16), nullable=False, server_default="trained"))
        batch.add_column(sa.Column("project_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("trainer_model_versions") as batch:
        batch.drop_column("project_version")
        batch.drop_column("lineage")
    op.drop_table("trainer_projects")

"""trustworthy outputs: operating-point changes, version fitness (issue 9)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fit_for_use", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("fitness_reasons", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "threshold_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("old_threshold", sa.Float(), nullable=True),
        sa.Column("new_threshold", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("threshold_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_threshold_events_model_name"), ["model_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("threshold_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threshold_events_model_name"))
    op.drop_table("threshold_events")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("fitness_reasons")
        batch_op.drop_column("fit_for_use")

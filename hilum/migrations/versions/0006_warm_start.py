"""warm start and model import (issue 12)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("init_from", sa.JSON(), nullable=True))
        # "init:<model>/v<n>" with a 64-character model name outgrows the old 64.
        batch_op.alter_column("weights", existing_type=sa.String(length=64), type_=sa.String(length=100))
    # An imported version has no job or dataset here; `source` says where its weights came from.
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.alter_column("job_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column("dataset_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.add_column(sa.Column("source", sa.String(length=80), nullable=False, server_default="trained"))


def downgrade() -> None:
    op.execute("DELETE FROM model_versions WHERE job_id IS NULL OR dataset_id IS NULL")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("source")
        batch_op.alter_column("dataset_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column("job_id", existing_type=sa.String(length=32), nullable=False)
    op.execute("UPDATE jobs SET weights = 'none' WHERE init_from IS NOT NULL")  # init:... may not fit 64
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("weights", existing_type=sa.String(length=100), type_=sa.String(length=64))
        batch_op.drop_column("init_from")

"""Engine: each run's lease (epoch + expiry), so only the current driver's records land.

Revision ID: 0008_run_lease
Revises: 0005_engine
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_run_lease"
down_revision: str | Sequence[str] | None = "0005_engine"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("lease_epoch", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("tasks", sa.Column("lease_expires_at", sa.DateTime(timezone=False), nullable=True))
    # The recovery sweep looks for running runs whose lease ran out.
    op.create_index("idx_tasks_running_lease", "tasks", ["lease_expires_at"],
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("idx_tasks_running_lease", table_name="tasks")
    op.drop_column("tasks", "lease_expires_at")
    op.drop_column("tasks", "lease_epoch")

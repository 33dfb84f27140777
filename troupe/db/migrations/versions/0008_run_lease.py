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
    # No index on lease_expires_at: every ledger write renews it, and an indexed column would
    # stop those updates from being HOT (each would rewrite all of the tasks table's indexes).
    # The recovery sweep finds running runs through idx_tasks_status.


def downgrade() -> None:
    op.drop_column("tasks", "lease_expires_at")
    op.drop_column("tasks", "lease_epoch")

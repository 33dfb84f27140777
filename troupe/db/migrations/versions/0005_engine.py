"""Engine: a company's execution switch (stop/start), apart from its status.

Revision ID: 0005_engine
Revises: 0001_initial
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_engine"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("companies", sa.Column("execution_stopped", sa.Boolean(), server_default=sa.text("false"),
                                         nullable=False))


def downgrade() -> None:
    op.drop_column("companies", "execution_stopped")

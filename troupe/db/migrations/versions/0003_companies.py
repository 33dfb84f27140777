"""Marketplace listing of published agents (category, pricing, documentation).

Revision ID: 0003_companies
Revises: 0001_initial
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_companies"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("marketplace", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("agents", "marketplace")

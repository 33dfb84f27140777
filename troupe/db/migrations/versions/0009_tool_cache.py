"""Tool result cache (``configuration.caching.strategy: database``): one row per key with its expiry.

Revision ID: 0009_tool_cache
Revises: 0001_initial
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_tool_cache"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tool_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        # No foreign key: entries of a deleted tool simply expire.
        sa.Column("tool_id", sa.String(64), nullable=False),
        sa.Column("value", postgresql.JSONB(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
    )
    op.create_index("idx_tool_cache_tool_expires", "tool_cache", ["tool_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("idx_tool_cache_tool_expires", table_name="tool_cache")
    op.drop_table("tool_cache")

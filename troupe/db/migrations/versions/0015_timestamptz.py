"""Every timestamp column becomes ``timestamptz``: the values were naive UTC, so each is
read ``AT TIME ZONE 'UTC'`` (the session's time zone plays no part). Merges every head.

agent_knowledge_chunks.indexed_at (0014, raw SQL) was ``timestamptz`` from the start.

Revision ID: 0015_timestamptz
Revises: 0003_companies, 0004c_seal_inline_api_keys, 0007_system_settings, 0009_tool_cache,
    0012_trigger_runs, 0014_agent_knowledge
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015_timestamptz"
down_revision: str | Sequence[str] | None = (
    "0003_companies", "0004c_seal_inline_api_keys", "0007_system_settings", "0009_tool_cache",
    "0012_trigger_runs", "0014_agent_knowledge",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "agent_reviews": ("created_at", "updated_at"),
    "agents": ("created_at", "last_used_at", "updated_at"),
    "chat_messages": ("created_at",),
    "companies": ("created_at", "last_activity_at", "updated_at"),
    "company_tools": ("installed_at",),
    "file_shares": ("created_at", "expires_at", "last_accessed_at"),
    "files": ("created_at", "updated_at"),
    "invitations": ("accepted_at", "created_at", "expires_at"),
    "logs": ("created_at",),
    "notifications": ("created_at", "expires_at", "read_at"),
    "refresh_tokens": ("created_at", "expires_at", "last_used_at", "revoked_at"),
    "system_settings": ("updated_at",),
    "task_executions": ("completed_at", "started_at"),
    "tasks": ("completed_at", "created_at", "estimated_completion", "lease_expires_at", "queued_at",
              "scheduled_at", "started_at", "updated_at"),
    "tool_cache": ("expires_at",),
    "tool_calls": ("created_at",),
    "tool_reviews": ("created_at", "updated_at"),
    "tools": ("created_at", "last_used_at", "updated_at"),
    "users": ("created_at", "deleted_at", "last_login_at", "locked_until", "password_changed_at",
              "password_reset_expires", "updated_at"),
    "workflows": ("created_at", "last_executed_at", "updated_at"),
}


def _alter(target: str) -> None:
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {target} USING {c} AT TIME ZONE 'UTC'" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _alter("timestamptz")


def downgrade() -> None:
    # timestamptz AT TIME ZONE 'UTC' is the naive UTC wall time again.
    _alter("timestamp")

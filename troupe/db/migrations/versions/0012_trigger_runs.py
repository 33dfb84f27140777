"""Triggered runs: one run per schedule slot and per (finished run, event-triggered workflow),
enforced by unique indexes; event triggers are found by containment on ``workflows.triggers``,
due schedules through a partial index on ``schedule->>'nextRun'``.

Revision ID: 0012_trigger_runs
Revises: 0008_run_lease
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_trigger_runs"
down_revision: str | Sequence[str] | None = "0008_run_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE UNIQUE INDEX uq_tasks_schedule_slot ON tasks (workflow_id, scheduled_at) "
               "WHERE metadata->>'source' = 'schedule'")
    op.execute("CREATE UNIQUE INDEX uq_tasks_event_parent ON tasks (workflow_id, (metadata->>'parentTaskId')) "
               "WHERE metadata->>'triggeredBy' LIKE 'event:%'")
    op.execute("CREATE INDEX idx_workflows_triggers ON workflows USING gin (triggers jsonb_path_ops)")
    # The scheduler's scan, every second: active workflows with a nextRun (ISO text, so text order is time order).
    op.execute("CREATE INDEX idx_workflows_due ON workflows ((schedule->>'nextRun')) "
               "WHERE status = 'active' AND schedule->>'nextRun' IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_workflows_due")
    op.execute("DROP INDEX IF EXISTS idx_workflows_triggers")
    op.execute("DROP INDEX IF EXISTS uq_tasks_event_parent")
    op.execute("DROP INDEX IF EXISTS uq_tasks_schedule_slot")

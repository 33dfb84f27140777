"""Initial schema: the spec's 14 tables plus company_tools, invitations, tool_calls, chat_messages.

Mirrors troupe.db.models exactly (checked with alembic.autogenerate.compare_metadata),
including the GIN indexes on TEXT[] tags / team_members, the GIN full-text
expression indexes (ix_<table>_fts) and the partial unique index
uq_task_executions_completed.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("avatar", sa.Text(), nullable=True),
        sa.Column("role", sa.String(length=20), server_default="user", nullable=True),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=True),
        sa.Column(
            "profile",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "preferences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("email_verified", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("email_verification_token", sa.String(length=255), nullable=True),
        sa.Column("password_reset_token", sa.String(length=255), nullable=True),
        sa.Column("password_reset_expires", sa.DateTime(), nullable=True),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.Column("login_attempts", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_index("idx_users_email", "users", ["email"], unique=False)
    op.create_index("idx_users_username", "users", ["username"], unique=False)
    op.create_index("idx_users_role", "users", ["role"], unique=False)
    op.create_index("idx_users_status", "users", ["status"], unique=False)
    op.create_index("idx_users_email_verified", "users", ["email_verified"], unique=False)
    op.create_index("idx_users_deleted_at", "users", ["deleted_at"], unique=False)
    op.create_index(
        "ix_users_fts",
        "users",
        [
            sa.literal_column(
                "to_tsvector('simple'::regconfig, (((((COALESCE(username, ''::character varying)::text || ' '::text) || COALESCE(email, ''::character varying)::text) || ' '::text) || COALESCE(first_name, ''::character varying)::text) || ' '::text) || COALESCE(last_name, ''::character varying)::text)"
            )
        ],
        unique=False,
        postgresql_using="gin",
    )

    op.create_table(
        "companies",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("industry", sa.String(length=50), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="idle", nullable=True),
        sa.Column("owner_id", sa.UUID(), nullable=True),
        sa.Column(
            "team_members", postgresql.ARRAY(sa.UUID()), server_default=sa.text("'{}'::uuid[]"), nullable=True
        ),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column("logo", sa.Text(), nullable=True),
        sa.Column("website", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("last_activity_at", sa.DateTime(), nullable=True),
        sa.Column(
            "member_roles",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_companies_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
    )
    op.create_index("idx_companies_owner_id", "companies", ["owner_id"], unique=False)
    op.create_index("idx_companies_type", "companies", ["type"], unique=False)
    op.create_index("idx_companies_industry", "companies", ["industry"], unique=False)
    op.create_index("idx_companies_status", "companies", ["status"], unique=False)
    op.create_index("idx_companies_tags", "companies", ["tags"], unique=False, postgresql_using="gin")
    op.create_index(
        "idx_companies_team_members", "companies", ["team_members"], unique=False, postgresql_using="gin"
    )
    op.create_index(
        "ix_companies_fts",
        "companies",
        [
            sa.literal_column(
                "to_tsvector('simple'::regconfig, (COALESCE(name, ''::character varying)::text || ' '::text) || COALESCE(description, ''::text))"
            )
        ],
        unique=False,
        postgresql_using="gin",
    )

    op.create_table(
        "agents",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="idle", nullable=True),
        sa.Column(
            "capabilities", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True
        ),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "performance",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column("version", sa.String(length=20), server_default="1.0.0", nullable=True),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("rating", sa.Numeric(precision=3, scale=2), server_default=sa.text("0.0"), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_agents_company_id_companies"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_agents_created_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index("idx_agents_company_id", "agents", ["company_id"], unique=False)
    op.create_index("idx_agents_created_by", "agents", ["created_by"], unique=False)
    op.create_index("idx_agents_type", "agents", ["type"], unique=False)
    op.create_index("idx_agents_provider", "agents", ["provider"], unique=False)
    op.create_index("idx_agents_status", "agents", ["status"], unique=False)
    op.create_index("idx_agents_is_public", "agents", ["is_public"], unique=False)
    op.create_index("idx_agents_tags", "agents", ["tags"], unique=False, postgresql_using="gin")
    op.create_index("idx_agents_rating", "agents", ["rating"], unique=False)
    op.create_index(
        "ix_agents_fts",
        "agents",
        [
            sa.literal_column(
                "to_tsvector('simple'::regconfig, (COALESCE(name, ''::character varying)::text || ' '::text) || COALESCE(description, ''::text))"
            )
        ],
        unique=False,
        postgresql_using="gin",
    )

    op.create_table(
        "tools",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("version", sa.String(length=20), server_default="1.0.0", nullable=True),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=True),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "schema",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "usage",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "documentation",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column(
            "pricing",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("rating", sa.Numeric(precision=3, scale=2), server_default=sa.text("0.0"), nullable=True),
        sa.Column("downloads", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_tools_created_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tools")),
    )
    op.create_index("idx_tools_created_by", "tools", ["created_by"], unique=False)
    op.create_index("idx_tools_type", "tools", ["type"], unique=False)
    op.create_index("idx_tools_category", "tools", ["category"], unique=False)
    op.create_index("idx_tools_status", "tools", ["status"], unique=False)
    op.create_index("idx_tools_is_public", "tools", ["is_public"], unique=False)
    op.create_index("idx_tools_tags", "tools", ["tags"], unique=False, postgresql_using="gin")
    op.create_index("idx_tools_rating", "tools", ["rating"], unique=False)
    op.create_index("idx_tools_downloads", "tools", ["downloads"], unique=False)
    op.create_index(
        "ix_tools_fts",
        "tools",
        [
            sa.literal_column(
                "to_tsvector('simple'::regconfig, (COALESCE(name, ''::character varying)::text || ' '::text) || COALESCE(description, ''::text))"
            )
        ],
        unique=False,
        postgresql_using="gin",
    )

    op.create_table(
        "workflows",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=20), server_default="1.0.0", nullable=True),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column(
            "nodes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "edges",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=20), server_default="draft", nullable=True),
        sa.Column(
            "triggers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=True,
        ),
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column("is_template", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("template_category", sa.String(length=50), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("last_executed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_workflows_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_workflows_created_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("idx_workflows_company_id", "workflows", ["company_id"], unique=False)
    op.create_index("idx_workflows_created_by", "workflows", ["created_by"], unique=False)
    op.create_index("idx_workflows_status", "workflows", ["status"], unique=False)
    op.create_index("idx_workflows_is_template", "workflows", ["is_template"], unique=False)
    op.create_index("idx_workflows_template_category", "workflows", ["template_category"], unique=False)
    op.create_index("idx_workflows_tags", "workflows", ["tags"], unique=False, postgresql_using="gin")
    op.create_index(
        "ix_workflows_fts",
        "workflows",
        [
            sa.literal_column(
                "to_tsvector('simple'::regconfig, (COALESCE(name, ''::character varying)::text || ' '::text) || COALESCE(description, ''::text))"
            )
        ],
        unique=False,
        postgresql_using="gin",
    )

    op.create_table(
        "tasks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=True),
        sa.Column("priority", sa.String(length=20), server_default="medium", nullable=True),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("workflow_id", sa.UUID(), nullable=True),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("progress", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("current_step", sa.String(length=255), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("execution_time", sa.Integer(), nullable=True),
        sa.Column("estimated_completion", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("assigned_to", sa.UUID(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column(
            "run_state",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.Column("queued_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_tasks_agent_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["assigned_to"], ["users.id"], name=op.f("fk_tasks_assigned_to_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_tasks_company_id_companies"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_tasks_created_by_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_tasks_workflow_id_workflows"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index("idx_tasks_company_id", "tasks", ["company_id"], unique=False)
    op.create_index("idx_tasks_workflow_id", "tasks", ["workflow_id"], unique=False)
    op.create_index("idx_tasks_agent_id", "tasks", ["agent_id"], unique=False)
    op.create_index("idx_tasks_created_by", "tasks", ["created_by"], unique=False)
    op.create_index("idx_tasks_assigned_to", "tasks", ["assigned_to"], unique=False)
    op.create_index("idx_tasks_status", "tasks", ["status"], unique=False)
    op.create_index("idx_tasks_type", "tasks", ["type"], unique=False)
    op.create_index("idx_tasks_priority", "tasks", ["priority"], unique=False)
    op.create_index("idx_tasks_created_at", "tasks", ["created_at"], unique=False)
    op.create_index("idx_tasks_tags", "tasks", ["tags"], unique=False, postgresql_using="gin")
    op.create_index(
        "idx_tasks_company_status_priority_created",
        "tasks",
        ["company_id", "status", "priority", "created_at"],
        unique=False,
    )

    op.create_table(
        "task_executions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("tool_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=True),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("execution_time", sa.Integer(), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("iteration", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_task_executions_agent_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_executions_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_task_executions_tool_id_tools"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_executions")),
    )
    op.create_index("idx_task_executions_task_id", "task_executions", ["task_id"], unique=False)
    op.create_index("idx_task_executions_agent_id", "task_executions", ["agent_id"], unique=False)
    op.create_index("idx_task_executions_tool_id", "task_executions", ["tool_id"], unique=False)
    op.create_index("idx_task_executions_status", "task_executions", ["status"], unique=False)
    op.create_index("idx_task_executions_started_at", "task_executions", ["started_at"], unique=False)
    op.create_index("idx_task_executions_task_node", "task_executions", ["task_id", "node_id"], unique=False)
    op.create_index(
        "uq_task_executions_completed",
        "task_executions",
        ["task_id", "node_id", "iteration"],
        unique=True,
        postgresql_where=sa.text("status = 'completed'"),
    )

    op.create_table(
        "files",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("thumbnail_url", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("uploaded_by", sa.UUID(), nullable=True),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("private", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_files_company_id_companies"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["users.id"], name=op.f("fk_files_uploaded_by_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index("idx_files_uploaded_by", "files", ["uploaded_by"], unique=False)
    op.create_index("idx_files_company_id", "files", ["company_id"], unique=False)
    op.create_index("idx_files_type", "files", ["type"], unique=False)
    op.create_index("idx_files_private", "files", ["private"], unique=False)
    op.create_index("idx_files_tags", "files", ["tags"], unique=False, postgresql_using="gin")
    op.create_index("idx_files_created_at", "files", ["created_at"], unique=False)

    op.create_table(
        "file_shares",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("file_id", sa.UUID(), nullable=True),
        sa.Column("share_id", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("allow_download", sa.Boolean(), server_default=sa.text("true"), nullable=True),
        sa.Column("allow_preview", sa.Boolean(), server_default=sa.text("true"), nullable=True),
        sa.Column("access_count", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("last_accessed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_file_shares_created_by_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_file_shares_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_shares")),
        sa.UniqueConstraint("share_id", name=op.f("uq_file_shares_share_id")),
    )
    op.create_index("idx_file_shares_file_id", "file_shares", ["file_id"], unique=False)
    op.create_index("idx_file_shares_share_id", "file_shares", ["share_id"], unique=False)
    op.create_index("idx_file_shares_created_by", "file_shares", ["created_by"], unique=False)
    op.create_index("idx_file_shares_expires_at", "file_shares", ["expires_at"], unique=False)

    op.create_table(
        "logs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("duration", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_logs_company_id_companies"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_logs_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_logs_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logs")),
    )
    op.create_index("idx_logs_level", "logs", ["level"], unique=False)
    op.create_index("idx_logs_source", "logs", ["source"], unique=False)
    op.create_index("idx_logs_user_id", "logs", ["user_id"], unique=False)
    op.create_index("idx_logs_company_id", "logs", ["company_id"], unique=False)
    op.create_index("idx_logs_task_id", "logs", ["task_id"], unique=False)
    op.create_index("idx_logs_request_id", "logs", ["request_id"], unique=False)
    op.create_index("idx_logs_created_at", "logs", ["created_at"], unique=False)
    op.create_index("idx_logs_source_created_at", "logs", ["source", "created_at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=True,
        ),
        sa.Column("read", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("read_at", sa.DateTime(), nullable=True),
        sa.Column("category", sa.String(length=50), server_default="general", nullable=True),
        sa.Column("priority", sa.String(length=20), server_default="medium", nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("idx_notifications_user_id", "notifications", ["user_id"], unique=False)
    op.create_index("idx_notifications_type", "notifications", ["type"], unique=False)
    op.create_index("idx_notifications_read", "notifications", ["read"], unique=False)
    op.create_index("idx_notifications_category", "notifications", ["category"], unique=False)
    op.create_index("idx_notifications_priority", "notifications", ["priority"], unique=False)
    op.create_index("idx_notifications_created_at", "notifications", ["created_at"], unique=False)

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("token", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("device_info", sa.Text(), nullable=True),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("family_id", sa.UUID(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("replaced_by", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_refresh_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token", name=op.f("uq_refresh_tokens_token")),
    )
    op.create_index("idx_refresh_tokens_user_id", "refresh_tokens", ["user_id"], unique=False)
    op.create_index("idx_refresh_tokens_token", "refresh_tokens", ["token"], unique=False)
    op.create_index("idx_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"], unique=False)
    op.create_index("idx_refresh_tokens_family_id", "refresh_tokens", ["family_id"], unique=False)

    op.create_table(
        "agent_reviews",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.CheckConstraint("rating >= 1 AND rating <= 5", name=op.f("ck_agent_reviews_rating_range")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_agent_reviews_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_agent_reviews_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_reviews")),
        sa.UniqueConstraint("agent_id", "user_id", name=op.f("uq_agent_reviews_agent_id")),
    )
    op.create_index("idx_agent_reviews_agent_id", "agent_reviews", ["agent_id"], unique=False)
    op.create_index("idx_agent_reviews_user_id", "agent_reviews", ["user_id"], unique=False)
    op.create_index("idx_agent_reviews_rating", "agent_reviews", ["rating"], unique=False)

    op.create_table(
        "tool_reviews",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tool_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=True),
        sa.CheckConstraint("rating >= 1 AND rating <= 5", name=op.f("ck_tool_reviews_rating_range")),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_tool_reviews_tool_id_tools"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tool_reviews_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_reviews")),
        sa.UniqueConstraint("tool_id", "user_id", name=op.f("uq_tool_reviews_tool_id")),
    )
    op.create_index("idx_tool_reviews_tool_id", "tool_reviews", ["tool_id"], unique=False)
    op.create_index("idx_tool_reviews_user_id", "tool_reviews", ["user_id"], unique=False)
    op.create_index("idx_tool_reviews_rating", "tool_reviews", ["rating"], unique=False)

    op.create_table(
        "company_tools",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=False),
        sa.Column("tool_id", sa.UUID(), nullable=False),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("installed_by", sa.UUID(), nullable=True),
        sa.Column("installed_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_company_tools_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["installed_by"],
            ["users.id"],
            name=op.f("fk_company_tools_installed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_company_tools_tool_id_tools"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_company_tools")),
        sa.UniqueConstraint("company_id", "tool_id", name=op.f("uq_company_tools_company_id")),
    )
    op.create_index("idx_company_tools_company_id", "company_tools", ["company_id"], unique=False)
    op.create_index("idx_company_tools_tool_id", "company_tools", ["tool_id"], unique=False)

    op.create_table(
        "invitations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("invited_user_id", sa.UUID(), nullable=True),
        sa.Column("role", sa.String(length=20), server_default="member", nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("token_hash", sa.String(length=255), nullable=False),
        sa.Column("invited_by", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'revoked', 'expired')", name=op.f("ck_invitations_status")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_invitations_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"], ["users.id"], name=op.f("fk_invitations_invited_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["invited_user_id"],
            ["users.id"],
            name=op.f("fk_invitations_invited_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
    )
    op.create_index("idx_invitations_email", "invitations", ["email"], unique=False)
    op.create_index("idx_invitations_company_id", "invitations", ["company_id"], unique=False)

    op.create_table(
        "tool_calls",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tool_id", sa.UUID(), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_tool_calls_agent_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_tool_calls_company_id_companies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_tool_calls_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_tool_calls_tool_id_tools"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tool_calls_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_calls")),
    )
    op.create_index("idx_tool_calls_tool_id", "tool_calls", ["tool_id"], unique=False)
    op.create_index("idx_tool_calls_created_at", "tool_calls", ["created_at"], unique=False)

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("room", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_messages_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index(
        "idx_chat_messages_room_created_at", "chat_messages", ["room", "created_at"], unique=False
    )


def downgrade() -> None:
    # (it may be used by other schemas and is harmless).
    op.drop_table("chat_messages")
    op.drop_table("tool_calls")
    op.drop_table("invitations")
    op.drop_table("company_tools")
    op.drop_table("tool_reviews")
    op.drop_table("agent_reviews")
    op.drop_table("refresh_tokens")
    op.drop_table("notifications")
    op.drop_table("logs")
    op.drop_table("file_shares")
    op.drop_table("files")
    op.drop_table("task_executions")
    op.drop_table("tasks")
    op.drop_table("workflows")
    op.drop_table("tools")
    op.drop_table("agents")
    op.drop_table("companies")
    op.drop_table("users")

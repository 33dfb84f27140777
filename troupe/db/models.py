"""SQLAlchemy 2 models for every table of the spec's database section, plus the
application's extra tables (company_tools, invitations, tool_calls, chat_messages).

Conventions:
- Column types, server defaults, nullability, FKs (with ON DELETE), CHECK/UNIQUE
  constraints and index names follow the spec's DDL; the migration
  ``migrations/versions/0001_initial.py`` creates exactly this metadata.
- Timestamps are ``TIMESTAMP WITH TIME ZONE`` (``UtcTimestamp``: aware UTC datetimes in
  and out; migration 0015 converted the earlier naive-UTC columns).
- A column named ``metadata`` is mapped as attribute ``meta`` (``metadata`` is
  reserved on declarative classes).
- ``eager_defaults`` makes INSERT/UPDATE fetch server-generated values
  (``created_at``, ``updated_at`` ...) via RETURNING, so they are available
  without a lazy refresh (important under asyncio).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from troupe.db.base import Base, UtcTimestamp, uuid_pk

__all__ = [
    "Base",
    "User",
    "Company",
    "Agent",
    "Tool",
    "Workflow",
    "Task",
    "TaskExecution",
    "File",
    "FileShare",
    "Log",
    "Notification",
    "RefreshToken",
    "AgentReview",
    "ToolReview",
    "CompanyTool",
    "Invitation",
    "ToolCall",
    "ChatMessage",
]

# --------------------------------------------------------------------------- helpers

_UUID = UUID(as_uuid=True)
_TS = UtcTimestamp()

_EMPTY_OBJ = text("'{}'::jsonb")
_EMPTY_LIST = text("'[]'::jsonb")
_EMPTY_TEXT_ARRAY = text("'{}'::text[]")
_EMPTY_UUID_ARRAY = text("'{}'::uuid[]")
_FALSE = text("false")
_TRUE = text("true")
_ZERO = text("0")


def _fk(target: str, ondelete: str, *, nullable: bool = True) -> Mapped[Any]:
    return mapped_column(_UUID, ForeignKey(target, ondelete=ondelete), nullable=nullable)


def _created_at(*, nullable: bool = True) -> Mapped[Any]:
    return mapped_column(_TS, server_default=func.now(), nullable=nullable)


def _updated_at() -> Mapped[Any]:
    return mapped_column(_TS, server_default=func.now(), onupdate=func.now(), nullable=True)


def _ts() -> Mapped[Any]:
    return mapped_column(_TS, nullable=True)


def _jsonb(default: Any = _EMPTY_OBJ, *, nullable: bool = True) -> Mapped[Any]:
    return mapped_column(JSONB, server_default=default, nullable=nullable)


def _tags() -> Mapped[Any]:
    return mapped_column(ARRAY(Text), server_default=_EMPTY_TEXT_ARRAY, nullable=True)


def _str(length: int, default: str | None = None, *, nullable: bool = True) -> Mapped[Any]:
    return mapped_column(String(length), server_default=default, nullable=nullable)


def _fts(table: str, *columns: tuple[str, bool]) -> Index:
    """GIN full-text expression index over ``coalesce(c1,'') || ' ' || coalesce(c2,'') ...``.

    ``columns`` are ``(name, is_varchar)`` pairs. The expression is spelled exactly as
    PostgreSQL reflects it (``pg_get_indexdef(..., pretty)``: explicit casts and
    parentheses), so that Alembic's autogenerate sees the reflected index as equal to
    the metadata one. Queries must use an equivalent expression to hit the index, e.g.
    ``to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(description, ''))``.
    """

    def term(name: str, is_varchar: bool) -> str:
        if is_varchar:
            return f"COALESCE({name}, ''::character varying)::text"
        return f"COALESCE({name}, ''::text)"

    expr = term(*columns[0])
    for i, col in enumerate(columns[1:]):
        left = expr if i == 0 else f"({expr})"
        expr = f"({left} || ' '::text) || {term(*col)}"
    return Index(f"ix_{table}_fts", text(f"to_tsvector('simple'::regconfig, {expr})"), postgresql_using="gin")


class _Model(Base):
    __abstract__ = True
    __mapper_args__ = {"eager_defaults": True}


# --------------------------------------------------------------------------- spec tables


class User(_Model):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    username: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    avatar: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = _str(20, "user")
    status: Mapped[str | None] = _str(20, "active")
    profile: Mapped[dict[str, Any] | None] = _jsonb()
    preferences: Mapped[dict[str, Any] | None] = _jsonb()
    email_verified: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    # SHA-256 hex digests of the emailed tokens, never the tokens themselves.
    email_verification_token: Mapped[str | None] = _str(255)
    password_reset_token: Mapped[str | None] = _str(255)
    password_reset_expires: Mapped[datetime | None] = _ts()
    last_login_at: Mapped[datetime | None] = _ts()
    login_attempts: Mapped[int | None] = mapped_column(Integer, server_default=_ZERO)
    locked_until: Mapped[datetime | None] = _ts()
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    # --- application extras
    deleted_at: Mapped[datetime | None] = _ts()
    token_version: Mapped[int] = mapped_column(Integer, server_default=_ZERO, nullable=False)
    password_changed_at: Mapped[datetime | None] = _ts()

    __table_args__ = (
        Index("idx_users_email", "email"),
        Index("idx_users_username", "username"),
        Index("idx_users_role", "role"),
        Index("idx_users_status", "status"),
        Index("idx_users_email_verified", "email_verified"),
        Index("idx_users_deleted_at", "deleted_at"),
        _fts("users", ("username", True), ("email", True), ("first_name", True), ("last_name", True)),
    )


class Company(_Model):
    __tablename__ = "companies"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    industry: Mapped[str | None] = _str(50)
    status: Mapped[str | None] = _str(20, "idle")
    owner_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    team_members: Mapped[list[uuid.UUID] | None] = mapped_column(
        ARRAY(_UUID), server_default=_EMPTY_UUID_ARRAY, nullable=True
    )
    settings: Mapped[dict[str, Any] | None] = _jsonb()
    metrics: Mapped[dict[str, Any] | None] = _jsonb()
    tags: Mapped[list[str] | None] = _tags()
    logo: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    last_activity_at: Mapped[datetime | None] = _ts()
    # --- application extras: user id (str) -> 'member' | 'viewer'
    member_roles: Mapped[dict[str, str]] = _jsonb(nullable=False)
    # --- engine (0005_engine): set by POST /companies/:id/stop, cleared by start
    execution_stopped: Mapped[bool] = mapped_column(Boolean, server_default=_FALSE, nullable=False)

    __table_args__ = (
        Index("idx_companies_owner_id", "owner_id"),
        Index("idx_companies_type", "type"),
        Index("idx_companies_industry", "industry"),
        Index("idx_companies_status", "status"),
        Index("idx_companies_tags", "tags", postgresql_using="gin"),
        Index("idx_companies_team_members", "team_members", postgresql_using="gin"),
        _fts("companies", ("name", True), ("description", False)),
    )


class Agent(_Model):
    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    model: Mapped[str] = mapped_column(String(100), nullable=False)
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str | None] = _str(20, "idle")
    capabilities: Mapped[list[str] | None] = _tags()
    configuration: Mapped[dict[str, Any] | None] = _jsonb()
    performance: Mapped[dict[str, Any] | None] = _jsonb()
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "SET NULL")
    created_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    tags: Mapped[list[str] | None] = _tags()
    version: Mapped[str | None] = _str(20, "1.0.0")
    is_public: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    rating: Mapped[Decimal | None] = mapped_column(Numeric(3, 2), server_default=text("0.0"))
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    last_used_at: Mapped[datetime | None] = _ts()
    # --- application extras: marketplace listing once published (0003_companies)
    marketplace: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)

    __table_args__ = (
        Index("idx_agents_company_id", "company_id"),
        Index("idx_agents_created_by", "created_by"),
        Index("idx_agents_type", "type"),
        Index("idx_agents_provider", "provider"),
        Index("idx_agents_status", "status"),
        Index("idx_agents_is_public", "is_public"),
        Index("idx_agents_tags", "tags", postgresql_using="gin"),
        Index("idx_agents_rating", "rating"),
        _fts("agents", ("name", True), ("description", False)),
    )


class Tool(_Model):
    __tablename__ = "tools"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    category: Mapped[str] = mapped_column(String(50), nullable=False)
    version: Mapped[str | None] = _str(20, "1.0.0")
    status: Mapped[str | None] = _str(20, "active")
    configuration: Mapped[dict[str, Any] | None] = _jsonb()
    schema: Mapped[dict[str, Any] | None] = _jsonb()
    usage: Mapped[dict[str, Any] | None] = _jsonb()
    documentation: Mapped[dict[str, Any] | None] = _jsonb()
    pricing: Mapped[dict[str, Any] | None] = _jsonb()
    created_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    tags: Mapped[list[str] | None] = _tags()
    is_public: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    rating: Mapped[Decimal | None] = mapped_column(Numeric(3, 2), server_default=text("0.0"))
    downloads: Mapped[int | None] = mapped_column(Integer, server_default=_ZERO)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    last_used_at: Mapped[datetime | None] = _ts()

    __table_args__ = (
        Index("idx_tools_created_by", "created_by"),
        Index("idx_tools_type", "type"),
        Index("idx_tools_category", "category"),
        Index("idx_tools_status", "status"),
        Index("idx_tools_is_public", "is_public"),
        Index("idx_tools_tags", "tags", postgresql_using="gin"),
        Index("idx_tools_rating", "rating"),
        Index("idx_tools_downloads", "downloads"),
        _fts("tools", ("name", True), ("description", False)),
    )


class Workflow(_Model):
    __tablename__ = "workflows"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str | None] = _str(20, "1.0.0")
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "CASCADE")
    nodes: Mapped[list[Any]] = _jsonb(_EMPTY_LIST, nullable=False)
    edges: Mapped[list[Any]] = _jsonb(_EMPTY_LIST, nullable=False)
    configuration: Mapped[dict[str, Any] | None] = _jsonb()
    status: Mapped[str | None] = _str(20, "draft")
    triggers: Mapped[list[Any] | None] = _jsonb(_EMPTY_LIST)
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    tags: Mapped[list[str] | None] = _tags()
    is_template: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    template_category: Mapped[str | None] = _str(50)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    last_executed_at: Mapped[datetime | None] = _ts()

    __table_args__ = (
        Index("idx_workflows_company_id", "company_id"),
        Index("idx_workflows_created_by", "created_by"),
        Index("idx_workflows_status", "status"),
        Index("idx_workflows_is_template", "is_template"),
        Index("idx_workflows_template_category", "template_category"),
        Index("idx_workflows_tags", "tags", postgresql_using="gin"),
        Index("idx_workflows_triggers", "triggers", postgresql_using="gin", postgresql_ops={"triggers": "jsonb_path_ops"}),
        Index("idx_workflows_due", text("(schedule->>'nextRun')"),
              postgresql_where=text("status = 'active' AND schedule->>'nextRun' IS NOT NULL")),
        _fts("workflows", ("name", True), ("description", False)),
    )


class Task(_Model):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str | None] = _str(20, "pending")
    priority: Mapped[str | None] = _str(20, "medium")
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "CASCADE")
    workflow_id: Mapped[uuid.UUID | None] = _fk("workflows.id", "SET NULL")
    agent_id: Mapped[uuid.UUID | None] = _fk("agents.id", "SET NULL")
    input: Mapped[Any | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Any | None] = mapped_column(JSONB)
    progress: Mapped[int | None] = mapped_column(Integer, server_default=_ZERO)
    current_step: Mapped[str | None] = _str(255)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = _ts()
    completed_at: Mapped[datetime | None] = _ts()
    execution_time: Mapped[int | None] = mapped_column(Integer)
    estimated_completion: Mapped[datetime | None] = _ts()
    created_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    assigned_to: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    tags: Mapped[list[str] | None] = _tags()
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_OBJ)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()
    # --- application extras
    run_state: Mapped[dict[str, Any]] = _jsonb(nullable=False)  # engine bookkeeping
    scheduled_at: Mapped[datetime | None] = _ts()
    queued_at: Mapped[datetime | None] = _ts()
    # The driving lease: every driver write is fenced on the epoch it claimed (troupe.engine.records).
    lease_epoch: Mapped[int] = mapped_column(Integer, server_default=_ZERO, nullable=False)
    lease_expires_at: Mapped[datetime | None] = _ts()

    __table_args__ = (
        Index("idx_tasks_company_id", "company_id"),
        Index("idx_tasks_workflow_id", "workflow_id"),
        Index("idx_tasks_agent_id", "agent_id"),
        Index("idx_tasks_created_by", "created_by"),
        Index("idx_tasks_assigned_to", "assigned_to"),
        Index("idx_tasks_status", "status"),
        Index("idx_tasks_type", "type"),
        Index("idx_tasks_priority", "priority"),
        Index("idx_tasks_created_at", "created_at"),
        Index("idx_tasks_tags", "tags", postgresql_using="gin"),
        Index("idx_tasks_company_status_priority_created", "company_id", "status", "priority", "created_at"),
        # One run per schedule slot, one per (finished run, event-triggered workflow): troupe.engine.triggers.
        Index("uq_tasks_schedule_slot", "workflow_id", "scheduled_at", unique=True,
              postgresql_where=text("metadata->>'source' = 'schedule'")),
        Index("uq_tasks_event_parent", "workflow_id", text("(metadata->>'parentTaskId')"), unique=True,
              postgresql_where=text("metadata->>'triggeredBy' LIKE 'event:%'")),
    )


class TaskExecution(_Model):
    __tablename__ = "task_executions"

    id: Mapped[uuid.UUID] = uuid_pk()
    task_id: Mapped[uuid.UUID | None] = _fk("tasks.id", "CASCADE")
    node_id: Mapped[str] = mapped_column(String(255), nullable=False)
    agent_id: Mapped[uuid.UUID | None] = _fk("agents.id", "SET NULL")
    tool_id: Mapped[uuid.UUID | None] = _fk("tools.id", "SET NULL")
    status: Mapped[str | None] = _str(20, "pending")
    input: Mapped[Any | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = _created_at()
    completed_at: Mapped[datetime | None] = _ts()
    execution_time: Mapped[int | None] = mapped_column(Integer)
    retry_count: Mapped[int | None] = mapped_column(Integer, server_default=_ZERO)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_OBJ)
    # --- application extras
    iteration: Mapped[int] = mapped_column(Integer, server_default=_ZERO, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, server_default=_ZERO, nullable=False)
    idempotency_key: Mapped[str | None] = _str(255)

    __table_args__ = (
        Index("idx_task_executions_task_id", "task_id"),
        Index("idx_task_executions_agent_id", "agent_id"),
        Index("idx_task_executions_tool_id", "tool_id"),
        Index("idx_task_executions_status", "status"),
        Index("idx_task_executions_started_at", "started_at"),
        Index("idx_task_executions_task_node", "task_id", "node_id"),
        # A completed node (per loop iteration) is never recorded twice.
        Index(
            "uq_task_executions_completed",
            "task_id",
            "node_id",
            "iteration",
            unique=True,
            postgresql_where=text("status = 'completed'"),
        ),
    )


class File(_Model):
    __tablename__ = "files"

    id: Mapped[uuid.UUID] = uuid_pk()
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    original_name: Mapped[str] = mapped_column(String(255), nullable=False)
    mime_type: Mapped[str] = mapped_column(String(100), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_OBJ)
    uploaded_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "SET NULL")
    private: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    tags: Mapped[list[str] | None] = _tags()
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()

    __table_args__ = (
        Index("idx_files_uploaded_by", "uploaded_by"),
        Index("idx_files_company_id", "company_id"),
        Index("idx_files_type", "type"),
        Index("idx_files_private", "private"),
        Index("idx_files_tags", "tags", postgresql_using="gin"),
        Index("idx_files_created_at", "created_at"),
    )


class FileShare(_Model):
    __tablename__ = "file_shares"

    id: Mapped[uuid.UUID] = uuid_pk()
    file_id: Mapped[uuid.UUID | None] = _fk("files.id", "CASCADE")
    share_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    created_by: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    expires_at: Mapped[datetime | None] = _ts()
    password_hash: Mapped[str | None] = _str(255)
    allow_download: Mapped[bool | None] = mapped_column(Boolean, server_default=_TRUE)
    allow_preview: Mapped[bool | None] = mapped_column(Boolean, server_default=_TRUE)
    access_count: Mapped[int | None] = mapped_column(Integer, server_default=_ZERO)
    last_accessed_at: Mapped[datetime | None] = _ts()
    created_at: Mapped[datetime | None] = _created_at()

    __table_args__ = (
        Index("idx_file_shares_file_id", "file_id"),
        Index("idx_file_shares_share_id", "share_id"),
        Index("idx_file_shares_created_by", "created_by"),
        Index("idx_file_shares_expires_at", "expires_at"),
    )


class Log(_Model):
    __tablename__ = "logs"

    id: Mapped[uuid.UUID] = uuid_pk()
    level: Mapped[str] = mapped_column(String(20), nullable=False)
    source: Mapped[str] = mapped_column(String(100), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[Any | None] = mapped_column(JSONB)
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "SET NULL")
    task_id: Mapped[uuid.UUID | None] = _fk("tasks.id", "SET NULL")
    request_id: Mapped[str | None] = _str(255)
    duration: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime | None] = _created_at()

    __table_args__ = (
        Index("idx_logs_level", "level"),
        Index("idx_logs_source", "source"),
        Index("idx_logs_user_id", "user_id"),
        Index("idx_logs_company_id", "company_id"),
        Index("idx_logs_task_id", "task_id"),
        Index("idx_logs_request_id", "request_id"),
        Index("idx_logs_created_at", "created_at"),
        Index("idx_logs_source_created_at", "source", "created_at"),
    )


class Notification(_Model):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any] | None] = _jsonb()
    read: Mapped[bool | None] = mapped_column(Boolean, server_default=_FALSE)
    read_at: Mapped[datetime | None] = _ts()
    category: Mapped[str | None] = _str(50, "general")
    priority: Mapped[str | None] = _str(20, "medium")
    expires_at: Mapped[datetime | None] = _ts()
    created_at: Mapped[datetime | None] = _created_at()

    __table_args__ = (
        Index("idx_notifications_user_id", "user_id"),
        Index("idx_notifications_type", "type"),
        Index("idx_notifications_read", "read"),
        Index("idx_notifications_category", "category"),
        Index("idx_notifications_priority", "priority"),
        Index("idx_notifications_created_at", "created_at"),
    )


class RefreshToken(_Model):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    token: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)  # SHA-256 hex
    expires_at: Mapped[datetime] = mapped_column(_TS, nullable=False)
    device_info: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(INET)
    created_at: Mapped[datetime | None] = _created_at()
    last_used_at: Mapped[datetime | None] = _ts()
    # --- application extras (rotation / reuse detection)
    family_id: Mapped[uuid.UUID] = mapped_column(_UUID, nullable=False)
    revoked_at: Mapped[datetime | None] = _ts()
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(_UUID, nullable=True)

    __table_args__ = (
        Index("idx_refresh_tokens_user_id", "user_id"),
        Index("idx_refresh_tokens_token", "token"),
        Index("idx_refresh_tokens_expires_at", "expires_at"),
        Index("idx_refresh_tokens_family_id", "family_id"),
    )


class AgentReview(_Model):
    __tablename__ = "agent_reviews"

    id: Mapped[uuid.UUID] = uuid_pk()
    agent_id: Mapped[uuid.UUID | None] = _fk("agents.id", "CASCADE")
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()

    __table_args__ = (
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating_range"),
        UniqueConstraint("agent_id", "user_id"),
        Index("idx_agent_reviews_agent_id", "agent_id"),
        Index("idx_agent_reviews_user_id", "user_id"),
        Index("idx_agent_reviews_rating", "rating"),
    )


class ToolReview(_Model):
    __tablename__ = "tool_reviews"

    id: Mapped[uuid.UUID] = uuid_pk()
    tool_id: Mapped[uuid.UUID | None] = _fk("tools.id", "CASCADE")
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = _updated_at()

    __table_args__ = (
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating_range"),
        UniqueConstraint("tool_id", "user_id"),
        Index("idx_tool_reviews_tool_id", "tool_id"),
        Index("idx_tool_reviews_user_id", "user_id"),
        Index("idx_tool_reviews_rating", "rating"),
    )


# --------------------------------------------------------------------------- application tables


class CompanyTool(_Model):
    """A tool installed into a company."""

    __tablename__ = "company_tools"

    id: Mapped[uuid.UUID] = uuid_pk()
    company_id: Mapped[uuid.UUID] = _fk("companies.id", "CASCADE", nullable=False)
    tool_id: Mapped[uuid.UUID] = _fk("tools.id", "CASCADE", nullable=False)
    configuration: Mapped[dict[str, Any]] = _jsonb(nullable=False)
    installed_by: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    installed_at: Mapped[datetime] = _created_at(nullable=False)

    __table_args__ = (
        UniqueConstraint("company_id", "tool_id"),
        Index("idx_company_tools_company_id", "company_id"),
        Index("idx_company_tools_tool_id", "tool_id"),
    )


class Invitation(_Model):
    """An invitation to join a company; ``token_hash`` is the SHA-256 hex of the emailed token."""

    __tablename__ = "invitations"

    id: Mapped[uuid.UUID] = uuid_pk()
    company_id: Mapped[uuid.UUID] = _fk("companies.id", "CASCADE", nullable=False)
    email: Mapped[str] = mapped_column(String(255), nullable=False)
    invited_user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    role: Mapped[str] = _str(20, "member", nullable=False)
    message: Mapped[str | None] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    invited_by: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    status: Mapped[str] = _str(20, "pending", nullable=False)
    expires_at: Mapped[datetime] = mapped_column(_TS, nullable=False)
    accepted_at: Mapped[datetime | None] = _ts()
    created_at: Mapped[datetime] = _created_at(nullable=False)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'accepted', 'revoked', 'expired')", name="status"),
        Index("idx_invitations_email", "email"),
        Index("idx_invitations_company_id", "company_id"),
    )


class ToolCall(_Model):
    """One row per tool invocation (usage statistics)."""

    __tablename__ = "tool_calls"

    id: Mapped[uuid.UUID] = uuid_pk()
    tool_id: Mapped[uuid.UUID] = _fk("tools.id", "CASCADE", nullable=False)
    company_id: Mapped[uuid.UUID | None] = _fk("companies.id", "SET NULL")
    agent_id: Mapped[uuid.UUID | None] = _fk("agents.id", "SET NULL")
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    task_id: Mapped[uuid.UUID | None] = _fk("tasks.id", "SET NULL")
    success: Mapped[bool] = mapped_column(Boolean, nullable=False)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at(nullable=False)

    __table_args__ = (
        Index("idx_tool_calls_tool_id", "tool_id"),
        Index("idx_tool_calls_created_at", "created_at"),
    )


class ChatMessage(_Model):
    """A message posted to a chat room (room name is free-form, e.g. ``company:<id>``)."""

    __tablename__ = "chat_messages"

    id: Mapped[uuid.UUID] = uuid_pk()
    room: Mapped[str] = mapped_column(String(255), nullable=False)
    # Nullable so system / agent messages can be stored; deleting the user deletes their messages.
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "CASCADE")
    content: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = _jsonb(nullable=False)
    created_at: Mapped[datetime] = _created_at(nullable=False)

    __table_args__ = (Index("idx_chat_messages_room_created_at", "room", "created_at"),)


class SystemSetting(_Model):
    """One section (general, security, limits, ...) of the runtime system settings (0007_system_settings)."""

    __tablename__ = "system_settings"

    section: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[dict[str, Any]] = _jsonb(nullable=False)
    updated_by: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    updated_at: Mapped[datetime] = mapped_column(_TS, server_default=func.now(), onupdate=func.now(),
                                                 nullable=False)

"""Agent knowledge: chunks of each agent's sources (files, URLs, training examples)
with a stored tsvector and a GIN index for Postgres full-text search.

Revision ID: 0014_agent_knowledge
Revises: 0001_initial
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014_agent_knowledge"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE agent_knowledge_chunks (
            id bigserial PRIMARY KEY,
            agent_id uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            source text NOT NULL,
            kind varchar(16) NOT NULL CHECK (kind IN ('file', 'url', 'training')),
            position integer NOT NULL,
            content text NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            indexed_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE INDEX ix_agent_knowledge_chunks_tsv ON agent_knowledge_chunks USING gin (tsv)")
    op.execute("CREATE INDEX ix_agent_knowledge_chunks_agent ON agent_knowledge_chunks (agent_id, position)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS agent_knowledge_chunks")

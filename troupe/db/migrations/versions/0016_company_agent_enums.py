"""Company and agent enum columns hold the spec's values: answers type them as enums
(OpenAPI), so a row written around the API with another value would make its reads fail.
Unknown (or missing) types and industries become 'other' / 'custom', statuses 'idle'; a missing
agent description becomes '' and a missing version '1.0.0'.

Revision ID: 0016_company_agent_enums
Revises: 0015_timestamptz
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016_company_agent_enums"
down_revision: str | Sequence[str] | None = "0015_timestamptz"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMPANY_TYPES = ("software", "research", "content", "consulting", "ecommerce", "finance", "healthcare",
                 "education", "other")
INDUSTRIES = ("technology", "finance", "healthcare", "education", "retail", "manufacturing", "consulting",
              "media", "other")
COMPANY_STATUSES = ("active", "idle", "error", "maintenance", "paused")
AGENT_TYPES = ("conversational", "analytical", "creative", "technical", "customer_service", "data_processing",
               "custom")
AGENT_STATUSES = ("active", "idle", "error", "training", "updating")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.execute(f"UPDATE companies SET type = 'other' WHERE type NOT IN ({_in(COMPANY_TYPES)})")
    op.execute(f"UPDATE companies SET industry = 'other' "
               f"WHERE industry IS NULL OR industry NOT IN ({_in(INDUSTRIES)})")
    op.execute(f"UPDATE companies SET status = 'idle' WHERE status IS NULL OR status NOT IN ({_in(COMPANY_STATUSES)})")
    op.execute(f"UPDATE agents SET type = 'custom' WHERE type NOT IN ({_in(AGENT_TYPES)})")
    op.execute(f"UPDATE agents SET status = 'idle' WHERE status IS NULL OR status NOT IN ({_in(AGENT_STATUSES)})")
    # The spec's Agent has a description and a version: null becomes "" and the first version.
    op.execute("UPDATE agents SET description = '' WHERE description IS NULL")
    op.execute("UPDATE agents SET version = '1.0.0' WHERE version IS NULL")


def downgrade() -> None:
    """The old values are not kept; nothing to undo."""

"""The "Webhook notify" template lets a run set ``vars.webhookUrl``
(``configuration.overridableVariables``): execute-time variables may only set what a
workflow declares overridable, and this template is meant to be pointed at a URL per run.

Revision ID: 0004b_template_overridable
Revises: 0004_workflow_templates
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from alembic import op

revision: str = "0004b_template_overridable"
down_revision: str | Sequence[str] | None = "0004_workflow_templates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The id 0004_workflow_templates gave the template (uuid5 of its name).
_WEBHOOK_NOTIFY = uuid.uuid5(uuid.UUID("6f1c3f0e-5b8e-4c1e-9a55-0e4d7b7a1a00"), "Webhook notify")


def upgrade() -> None:
    op.execute(f"""UPDATE workflows SET configuration = configuration || '{{"overridableVariables": ["webhookUrl"]}}'
                   WHERE id = '{_WEBHOOK_NOTIFY}' AND company_id IS NULL""")


def downgrade() -> None:
    op.execute(f"UPDATE workflows SET configuration = configuration - 'overridableVariables' "
               f"WHERE id = '{_WEBHOOK_NOTIFY}' AND company_id IS NULL")

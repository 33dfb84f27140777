"""Inline agent nodes' ``apiKey`` stored in clear before keys were sealed on save are
sealed now (AES-256-GCM, TROUPE_SECRETS_KEY), so no run records or read shows them.

Revision ID: 0004c_seal_inline_api_keys
Revises: 0004b_template_overridable
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004c_seal_inline_api_keys"
down_revision: str | Sequence[str] | None = "0004b_template_overridable"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = ("apiKey", "api_key")


def _plain_keys(nodes: Any) -> list[tuple[dict[str, Any], str]]:
    found = []
    for node in nodes if isinstance(nodes, list) else []:
        config = (node.get("data") or {}).get("configuration") if isinstance(node, dict) else None
        if node.get("type") != "agent" or not isinstance(config, dict):
            continue
        for key in _KEYS:
            value = config.get(key)
            if isinstance(value, str) and value and "{{" not in value and value != "********" \
                    and not value.startswith("enc:v1:"):
                found.append((config, key))
    return found


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, nodes FROM workflows WHERE nodes @> '[{\"type\": \"agent\"}]'::jsonb")).all()
    box = None
    for workflow_id, nodes in rows:
        plain = _plain_keys(nodes)
        if not plain:
            continue
        if box is None:
            # The deployment's secrets key is needed only when there is something to seal.
            from troupe.security import SecretBox

            box = SecretBox()
        for config, key in plain:
            config[key] = box.seal(config[key])
        bind.execute(sa.text("UPDATE workflows SET nodes = CAST(:nodes AS jsonb) WHERE id = :id"),
                     {"nodes": json.dumps(nodes), "id": workflow_id})


def downgrade() -> None:
    # Sealed keys stay sealed: every version of the node runtime opens them.
    pass

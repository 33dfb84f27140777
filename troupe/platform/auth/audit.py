"""Audit-log rows in the spec's ``logs`` table (source ``audit``).

Anyone recording a security-relevant action calls :func:`audit`; the row joins
the caller's transaction, so it is written exactly when the action is."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.platform.context import current_request

AUDIT_SOURCE = "audit"


async def audit(session: AsyncSession, *, action: str, message: str, user_id: uuid.UUID | None,
                actor_id: uuid.UUID | None = None, company_id: uuid.UUID | None = None,
                level: str = "info", **details: Any) -> None:
    """``user_id`` is the account the action concerns (its activity feed shows it);
    ``actor_id`` who did it, when someone else did."""
    from troupe import runtime_settings

    # features.auditLogEnabled (default AUDIT_LOG_ENABLED) switches the audit trail off.
    if not (await runtime_settings.current()).features.audit_log_enabled:
        return
    ctx = current_request()
    payload = {"action": action, "ip": ctx.client_ip, **details}
    payload["actorId"] = str(actor_id or user_id) if (actor_id or user_id) else None
    session.add(models.Log(level=level, source=AUDIT_SOURCE, message=message, details=payload,
                           user_id=user_id, company_id=company_id, request_id=ctx.request_id))
    await session.flush()

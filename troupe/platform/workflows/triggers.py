"""Workflow triggers as stored and answered, and the signed webhook call that starts a run.

Trigger types (``WorkflowTrigger.type``):
- ``manual``: no configuration; runs are started with ``POST /api/tasks`` + execute.
- ``webhook``: ``configuration.secret`` (16-256 characters, stored sealed, answered
  ``********``; send ``********`` back to keep it). Answers carry ``configuration.url``,
  the path to call: ``POST /api/workflows/{id}/triggers/{triggerId}/webhook``, signed
  with ``X-Troupe-Timestamp`` (Unix seconds, within ``SIGNATURE_TOLERANCE_SECONDS``)
  and ``X-Troupe-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>``.
  The JSON body becomes the run's input; ``configuration.variables`` (optional) its variables.
- ``event``: ``configuration.workflowId`` (another workflow of the same company) and
  ``configuration.on`` (``completed`` (default) | ``failed`` | ``finished``): a run of that
  workflow ending so starts this one (``troupe.engine.triggers.on_run_finished``).
- ``schedule`` and ``file`` are refused: the cron schedule is the workflow's ``schedule``
  (``POST /api/workflows/{id}/schedule``), and file triggers are not supported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.engine import triggers as engine_triggers
from troupe.errors import AppError, ErrorCode, invalid, not_found
from troupe.infra.redis import get_redis, rkey
from troupe.platform.tasks import service as tasks_service
from troupe.platform.tools.secrets import MASK
from troupe.platform.workflows import schemas as s
from troupe.security import SecretBox

SIGNATURE_HEADER = "X-Troupe-Signature"
TIMESTAMP_HEADER = "X-Troupe-Timestamp"
SIGNATURE_TOLERANCE_SECONDS = 300
SECRET_MIN, SECRET_MAX = s.WEBHOOK_SECRET_LENGTH
_KEYS = s.TRIGGER_CONFIG_KEYS


def webhook_path(workflow_id: uuid.UUID | str, trigger_id: str) -> str:
    return f"/api/workflows/{workflow_id}/triggers/{trigger_id}/webhook"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Troupe-Signature`` value a caller sends."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# --------------------------------------------------------------------------- stored documents


async def trigger_docs(*, session: AsyncSession, items: list[s.WorkflowTrigger] | None, old: list[Any] | None,
                       workflow_id: uuid.UUID | None, company_id: uuid.UUID | None,
                       keep_unsent_secrets: bool = False) -> list[dict[str, Any]]:
    """Check every trigger and seal webhook secrets (``MASK`` keeps the stored one; with
    ``keep_unsent_secrets`` (imports, whose documents carry none) a missing one too)."""
    previous = {t.get("id"): t for t in old or [] if isinstance(t, dict)}
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    box = SecretBox()
    for index, item in enumerate(items or []):
        field = f"triggers.{index}"
        if item.id in seen:
            raise invalid(f"duplicate trigger id {item.id!r}", field=f"{field}.id")
        seen.add(item.id)
        if item.type == "schedule":
            raise invalid("schedule triggers are not used: set the workflow's schedule "
                          "(POST /api/workflows/{id}/schedule)", field=f"{field}.type")
        if item.type == "file":
            raise invalid("file triggers are not supported", field=f"{field}.type")
        config = dict(item.configuration)
        unknown = sorted(set(config) - _KEYS[item.type])
        if unknown:
            raise invalid(f"{item.type} triggers take no configuration key(s) {unknown}",
                          field=f"{field}.configuration.{unknown[0]}")
        if item.type == "webhook":
            config.pop("url", None)  # answered, never stored
            old_secret = ((previous.get(item.id) or {}).get("configuration") or {}).get("secret")
            secret = config.get("secret")
            if (secret == MASK or (secret is None and keep_unsent_secrets)) and SecretBox.is_sealed(old_secret):
                config["secret"] = old_secret
            elif secret is None and keep_unsent_secrets:
                config.pop("secret", None)  # imported without one: the trigger answers 401 until it is set
            elif not isinstance(secret, str) or secret == MASK or not SECRET_MIN <= len(secret) <= SECRET_MAX:
                raise invalid(f"a webhook trigger needs configuration.secret ({SECRET_MIN}-{SECRET_MAX} characters)",
                              field=f"{field}.configuration.secret")
            else:
                config["secret"] = box.seal(secret)
            if "variables" in config and not isinstance(config["variables"], dict):
                raise invalid("configuration.variables must be an object", field=f"{field}.configuration.variables")
        elif item.type == "event":
            config["on"] = config.get("on") or "completed"
            if config["on"] not in engine_triggers.EVENT_ON:
                raise invalid(f"configuration.on must be one of {list(engine_triggers.EVENT_ON)}",
                              field=f"{field}.configuration.on")
            try:
                source = uuid.UUID(str(config.get("workflowId")))
            except ValueError:
                raise invalid("an event trigger needs configuration.workflowId (a workflow id)",
                              field=f"{field}.configuration.workflowId") from None
            if source == workflow_id:
                raise invalid("an event trigger cannot start its own workflow", field=f"{field}.configuration.workflowId")
            found = await session.scalar(select(models.Workflow.id).where(
                models.Workflow.id == source, models.Workflow.company_id == company_id))
            if found is None:
                raise invalid("configuration.workflowId is not a workflow of this company",
                              field=f"{field}.configuration.workflowId")
            config["workflowId"] = str(source)
        docs.append({"id": item.id, "type": item.type, "configuration": config, "enabled": item.enabled})
    return docs


def trigger_out(workflow_id: uuid.UUID, doc: dict[str, Any]) -> s.WorkflowTriggerOut:
    config = dict(doc.get("configuration") or {})
    if doc.get("type") == "webhook":
        config["secret"] = MASK if SecretBox.is_sealed(config.get("secret")) else None
        config["url"] = webhook_path(workflow_id, str(doc.get("id")))
    return s.WorkflowTriggerOut.model_validate({**doc, "configuration": config})


def exported(doc: dict[str, Any]) -> dict[str, Any]:
    """Exports carry no secrets."""
    config = {k: v for k, v in (doc.get("configuration") or {}).items() if not SecretBox.is_sealed(v)}
    return {**doc, "configuration": config}


# --------------------------------------------------------------------------- the webhook call


def _unauthorized(message: str) -> AppError:
    return AppError(ErrorCode.UNAUTHORIZED, message)


async def receive_webhook(*, session: AsyncSession, workflow_id: uuid.UUID, trigger_id: str, body: bytes,
                          timestamp: str | None, signature: str | None) -> models.Task:
    """Check the signature first (nothing is written for a bad one), then queue a run
    (source ``webhook``). The caller commits and wakes the company."""
    workflow = await session.get(models.Workflow, workflow_id)
    trigger = next((t for t in (workflow.triggers or []) if isinstance(t, dict) and t.get("id") == trigger_id
                    and t.get("type") == "webhook"), None) if workflow is not None else None
    if workflow is None or trigger is None or not trigger.get("enabled", True):
        raise not_found("Webhook trigger")
    sealed = (trigger.get("configuration") or {}).get("secret")
    if not SecretBox.is_sealed(sealed):
        raise _unauthorized("This webhook trigger has no secret; set configuration.secret")
    if not timestamp or not signature:
        raise _unauthorized(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise _unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(time.time() - sent_at) > SIGNATURE_TOLERANCE_SECONDS:
        raise _unauthorized(f"{TIMESTAMP_HEADER} is more than {SIGNATURE_TOLERANCE_SECONDS} s away from now")
    expected = sign(SecretBox().open(sealed), timestamp, body)
    if not hmac.compare_digest(expected, signature.strip()):
        raise _unauthorized("The signature does not match the body")
    try:
        payload = json.loads(body) if body.strip() else {}
    except ValueError:
        raise invalid("The body must be JSON", code=ErrorCode.INVALID_FORMAT) from None
    company = await session.get(models.Company, workflow.company_id) if workflow.company_id else None
    if company is None:
        raise not_found("Webhook trigger")
    await tasks_service.check_company_accepts(company)
    tasks_service.check_workflow_runnable(workflow)
    # A signed request is good once: a replay within the tolerance window is refused.
    if not await get_redis().set(rkey("webhook", "seen", signature.strip()), "1", nx=True,
                                 ex=SIGNATURE_TOLERANCE_SECONDS * 2):
        raise _unauthorized("This signed request was already received")
    task = engine_triggers.new_run(workflow, source="webhook", name=f"{workflow.name[:200]} (webhook)",
                                   input_=payload, triggered_by=f"webhook:{trigger_id}",
                                   variables=(trigger.get("configuration") or {}).get("variables"))
    workflow.last_executed_at = task.queued_at
    session.add(task)
    await session.flush()
    return task

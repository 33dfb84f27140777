"""The OpenAPI document against the live server: schemathesis over every operation.

Schemathesis loads ``/openapi.json`` from the session's stack and, for every operation,
generates requests that fit the schema (positive) and requests that break it (negative),
sends them over real HTTP, and checks each answer:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``: the status is declared for the operation;
- ``content_type_conformance``: the content type is declared for that status;
- ``response_schema_conformance``: the body matches the declared schema;
- ``positive_data_acceptance``: a schema-valid request is not refused as invalid
  (2xx, or 401/403/404/409/429 which say something about the caller or the state);
- ``negative_data_rejection``: a request outside the schema is refused with a 4xx;
- ``validation_envelope`` (ours): a request outside the schema refused as invalid gets
  the envelope with a ``VAL_*`` code, and every ``VAL_*`` answer names the offending field.

A few rules cannot be written in JSON Schema because they depend on other data, the clock
or a runtime setting (the password policy, a tool's own input schema, "expiresAt in the
future", a workflow graph's validity, the variables a workflow lets a run set). Schema-valid
requests refused for exactly those reasons are listed in ``INEXPRESSIBLE`` with the reason,
by operation, error code and field; nothing else is let through.

It runs twice: as an administrator (``super_admin``, so system settings, backups and
user management are covered) over every operation, and as a plain user (role ``user``,
owner of a company) over the routes tests/security_matrix.tsv lets a company owner
call. Path parameters, and ids inside bodies, name real objects the caller can see
(tests/test_route_matrix.py's world: a company, its agent, tool, workflow, task, file,
share and notification), with a fresh object for each route that destroys or changes
the state of its target, so every generated request reaches the service behind it.

Every call comes from a client address of its own (X-Forwarded-For, honoured from the
test client, see tests/conftest.py TRUSTED_PROXIES), so the per-IP limits are not
tripped; a 429 would still be declared. ``PUT /api/settings`` bodies are real: the
settings rows are put back after each one, so generated values (maintenance mode, a
rate limit of 1) reach neither the next call nor the rest of the suite.

Deterministic (``derandomize``) and bounded: a few examples per operation, no shrinking.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import HypothesisException
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.auth_helpers import fresh_ip
from tests.test_route_matrix import Caller, World, build_world, load_table

# Only routes that would end the test's own session are left out.
EXCLUDED = {
    ("POST", "/api/auth/logout"): "revokes the calling token: every later call of the run would answer 401",
    ("POST", "/api/settings/restore"): "replaces the database with a backup: the run's users, tokens and "
                                       "objects (and the rest of the suite's) would be gone",
}
POSITIVE_EXAMPLES = 4
NEGATIVE_EXAMPLES = 2
# A plain user calls what tests/security_matrix.tsv lets a company owner call.
REFUSED_TO_OWNER = ("403", "401 AUTH_001")


def validation_envelope(ctx, response, case) -> None:
    """A request outside the schema refused as invalid carries the envelope with a VAL_* code; any
    VAL_* answer names the offending field. (A schema-valid request refused with 422 BIZ_* is
    positive_data_acceptance's finding.)"""
    if response.status_code not in (400, 422):
        return
    body = response.json()
    error = body.get("error") or {}
    code = str(error.get("code", ""))
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    assert body.get("success") is False and (code.startswith("VAL_") or not negative), \
        f"{response.status_code} without a VAL_* envelope: {body}"
    if code.startswith("VAL_"):
        assert error.get("field"), f"{response.status_code} {code} names no field: {body}"


# Schema-valid requests refused for a rule JSON Schema cannot state: it depends on other data,
# the clock or a runtime setting. Only these answers (operation, code, field prefix) are not
# counted as "schema-valid request refused"; every other check still applies to them.
INEXPRESSIBLE = {
    ("POST /api/auth/register", "VAL_005", "password"):
        "the password policy is a runtime setting (security.passwordPolicy) and bans the username inside",
    ("POST /api/tools/{tool_id}/test", "VAL_001", "input"):
        "the input must match the tool's own input schema, stored with the tool",
    ("POST /api/files/{file_id}/share", "VAL_001", "expiresAt"): "expiresAt must lie in the future",
    ("POST /api/workflows", "BIZ_001", ""): "a graph's validity (edges naming its nodes, reachability, "
                                            "cycles) is a property of the whole document; drafts are kept",
    ("PUT /api/workflows/{workflow_id}", "BIZ_001", ""): "as for POST /api/workflows",
    ("POST /api/tasks/batch", "VAL_001", "variables"):
        "the variables a run may set are listed by the workflow (configuration.overridableVariables)",
    ("POST /api/tasks", "VAL_001", "variables"): "as for POST /api/tasks/batch",
    ("POST /api/agents", "VAL_001", "configuration.maxTokens"):
        "maxTokens <= contextWindow compares two fields, and the model's known window is data",
    ("GET /api/metrics/performance", "VAL_001", "granularity"):
        "the number of buckets between startDate and now (at most 5000) depends on the clock",
    ("GET /api/companies/{company_id}/metrics", "VAL_001", "period"): "as for GET /api/metrics/performance",
    ("GET /api/logs", "VAL_001", "startDate"): "startDate <= endDate compares two fields",
    **{(route, "VAL_001", f"settings.{limit}"):
       f"settings.{limit} is capped by the system settings' limits, a runtime value (PUT /api/settings)"
       for route in ("POST /api/companies", "PUT /api/companies/{company_id}")
       for limit in ("maxAgents", "maxTools", "maxConcurrency")},
    **{(route, "VAL_001", "triggers."):
       ('"********" keeps a webhook trigger\'s stored secret (refused where none is stored), trigger ids are '
        "unique within the list, and an event trigger's workflowId names another workflow of this company")
       for route in ("POST /api/workflows", "PUT /api/workflows/{workflow_id}")},
    ("PUT /api/companies/{company_id}", "VAL_001", "teamMembers"):
        "the owner stays a member and every id must name a user: data, not shape",
    ("POST /api/companies/{company_id}/import", "VAL_001", "data.tools"):
        "tools are linked by id: each must exist and be visible to the caller (data, not shape)",
    ("POST /api/tools", "VAL_001", "schema."):
        "schema.input/schema.output must themselves be valid JSON Schemas (checked against the meta-schema)",
    ("PUT /api/tools/{tool_id}", "VAL_001", "configuration."):
        "which configuration sections apply follows the stored tool's type when the body leaves type out",
    ("POST /api/workflows/{workflow_id}/schedule", "VAL_001", "cron"):
        "a cron expression's meaning (croniter) is beyond a pattern: '0' has the characters but not the fields",
}


def inexpressible(label: str, failure: Failure, response) -> bool:
    if type(failure).__name__ != "RejectedPositiveData":
        return False
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return False
    code, field = error.get("code"), error.get("field") or ""
    if code == "VAL_003" and str(error.get("message", "")).endswith("contains a NUL character"):
        # Typed strings say "no U+0000" in the document (pattern); free-form values (input, metadata,
        # secrets, open objects) cannot, and PostgreSQL cannot store it.
        return True
    return any(label == known_label and code == known_code and field.startswith(prefix)
               for known_label, known_code, prefix in INEXPRESSIBLE)


def deepest_schema_error(case, response) -> str | None:
    """The innermost reason a body fails its declared schema (schemathesis reports the outer anyOf)."""
    import jsonschema

    document = case.operation.schema.raw_schema
    declared = document["paths"][case.operation.path][case.method.lower()]["responses"].get(
        str(response.status_code), {})
    schema = declared.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(response.json()))
    if error is None:
        return None
    while error.context:
        error = jsonschema.exceptions.best_match(error.context)
    path = ".".join(str(part) for part in error.absolute_path)
    return f"at {path}: {error.message[:200]}"


def generated_nothing_invalid(failure: Failure) -> bool:
    """Schemathesis could not make a multipart body invalid (a binary part has no invalid form)
    and sent a valid one under the negative label ("Invalid component: positive test case")."""
    return type(failure).__name__ == "AcceptedNegativeData" and "positive test case" in (failure.message or "")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          positive_data_acceptance, negative_data_rejection, validation_envelope]


@dataclass
class Finding:
    role: str
    operation: str
    check: str
    status: int
    title: str
    example: str

    def __str__(self) -> str:
        return f"[{self.role}] {self.operation} — {self.check} ({self.status}): {self.title}\n    {self.example}"


@dataclass
class Run:
    base_url: str
    loop: asyncio.AbstractEventLoop
    world: World
    settings_rows: list[dict[str, Any]]
    session: requests.Session = field(default_factory=requests.Session)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    calls: int = 0
    operations: int = 0


# --------------------------------------------------------------------------- real objects


async def path_targets(w: World, who: Caller, method: str, path: str) -> dict[str, str]:
    """A real object for each path parameter; a fresh one where the call destroys, rewrites or
    moves it (generated PUT and import bodies pause workflows, detach agents...), so that the
    standing objects stay as they were for the routes that read or run them."""
    action = path.rsplit("/", 1)[-1]
    rewrites = method in ("PUT", "DELETE") or action == "import"
    # start/stop/pause/resume: a stopped or paused company C would refuse the run's task executions.
    company_state = action in ("start", "stop", "pause", "resume") and "{company_id}" in path
    targets: dict[str, str] = {}
    for name in re.findall(r"\{(\w+)\}", path):
        if name == "company_id":
            targets[name] = await w.new_company() if rewrites or company_state else w.company
        elif name == "agent_id":
            if action == "unpublish":
                targets[name] = await w.new_agent(public=True)
            elif rewrites or action == "publish":
                targets[name] = await w.new_agent()
            else:
                targets[name] = w.agent
        elif name == "tool_id":
            if rewrites:
                targets[name] = await w.new_tool(install_in=w.company)
            elif action == "install":
                targets[name] = await w.once("public_tool", lambda: w.new_tool(public=True))
            elif action == "uninstall":
                targets[name] = await w.new_tool(install_in=await w.new_company())
            else:
                targets[name] = w.tool
        elif name == "workflow_id":
            targets[name] = await w.new_workflow() if rewrites else w.workflow
        elif name == "trigger_id":
            targets[name] = await webhook_trigger(w)
        elif name == "task_id":
            status = {"resume": "paused", "retry": "failed"}.get(action, "pending")
            changes = method in ("PUT", "DELETE") or action in ("execute", "cancel", "pause", "resume", "retry")
            targets[name] = await w.new_task(status) if changes else w.task
        elif name == "user_id":
            # Reading and editing one's own account; anything that changes a role, a status or
            # removes an account gets an account of its own (never the caller's).
            own = who.role == "user" and method in ("GET", "PUT") and action in ("{user_id}", "activity")
            reads = method == "GET"
            targets[name] = who.id if own else w.owner.id if reads else (await w.new_user()).id
        elif name == "notification_id":
            targets[name] = await notification_of(w, who)
        elif name == "file_id":
            targets[name] = await w.new_file() if rewrites else await w.file()
        elif name == "share_id":
            targets[name] = await w.share()
        else:
            raise AssertionError(f"no real object for path parameter {name} of {method} {path}")
    return targets


async def webhook_trigger(w: World) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import SecretBox

    async def make() -> str:
        async with session_scope() as session:
            workflow = await session.get(models.Workflow, uuid.UUID(w.workflow))
            workflow.triggers = [{"id": "hook", "type": "webhook", "enabled": True,
                                  "configuration": {"secret": SecretBox().seal("s" * 24)}}]
        return "hook"
    return await w.once("webhook", make)


async def notification_of(w: World, who: Caller) -> str:
    from troupe.db import models

    if who.id == w.owner.id:
        return w.notification
    return await w.once(f"notification:{who.id}", lambda: w._add(models.Notification(
        user_id=uuid.UUID(who.id), type="info", title="hello", message="m", data={})))


def body_ids(w: World, who: Caller) -> dict[str, str]:
    """Ids a generated body names, replaced by real ones (only where it holds a well-formed id)."""
    return {"companyId": w.company, "workflowId": w.workflow, "agentId": w.agent, "toolId": w.tool,
            "taskId": w.task, "userId": who.id or ""}


def with_real_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ids and isinstance(item, str) and _is_uuid(item):
                out[key] = ids[key]
            else:
                out[key] = with_real_ids(item, ids)
        return out
    if isinstance(value, list):
        return [with_real_ids(item, ids) for item in value]
    return value


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- settings put back


async def read_settings_rows() -> list[dict[str, Any]]:
    from sqlalchemy import select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return [{"section": row.section, "value": row.value, "updated_by": row.updated_by}
                for row in await session.scalars(select(models.SystemSetting))]


async def write_settings_rows(rows: list[dict[str, Any]]) -> None:
    from sqlalchemy import delete

    from troupe import runtime_settings
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        await session.execute(delete(models.SystemSetting))
        session.add_all(models.SystemSetting(**row) for row in rows)
    await runtime_settings.invalidate()


# --------------------------------------------------------------------------- the run


def run_operation(run: Run, operation, who: Caller, targets: dict[str, str], mode: GenerationMode,
                  examples: int) -> None:
    ids = body_ids(run.world, who)
    label = operation.label
    restores_settings = label == "PUT /api/settings"

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=targets))
    def send(case) -> None:
        if isinstance(case.body, dict | list):
            case.body = with_real_ids(case.body, ids)
        headers = {**who.headers, **fresh_ip()}
        response = case.call(base_url=run.base_url, session=run.session, headers=headers, timeout=60)
        run.calls += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                if not (inexpressible(label, failure, response) or generated_nothing_invalid(failure)):
                    record(run, who, label, failure, response, case)
        finally:
            if restores_settings:
                asyncio.run_coroutine_threadsafe(write_settings_rows(run.settings_rows), run.loop).result(30)

    try:
        send()
    except HypothesisException:
        pass  # nothing to generate in this mode (e.g. no parameter that can be made invalid)


def record(run: Run, who: Caller, label: str, failure: Failure, response, case) -> None:
    status = response.status_code
    check = type(failure).__name__
    key = (who.role, label, check)
    if key in run.findings:
        return
    body = case.body if not isinstance(case.body, bytes) else f"<{len(case.body)} bytes>"
    try:
        error = response.json().get("error") or {}
        said = f"{error.get('code')} {error.get('field')}: {error.get('message')}"
    except ValueError:
        said = response.headers.get("content-type", "")
    detail = " / ".join(line.strip() for line in (failure.message or "").splitlines() if line.strip())
    if type(failure).__name__ == "JsonSchemaError":
        detail = deepest_schema_error(case, response) or detail
    example = f"{case.method} {case.formatted_path} query={case.query or {}} body={str(body)[:300]}" \
              f" -> {status} [{said[:200]}] {detail[:300]}"
    run.findings[key] = Finding(who.role, label, check, status, failure.title, example)


def run_as(run: Run, schema, who: Caller, targets: dict[str, dict[str, str]], labels: set[str]) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label not in labels:
            continue
        run.operations += 1
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                               (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
            run_operation(run, operation, who, targets[operation.label], mode, examples)


def owner_may_call() -> set[tuple[str, str]]:
    """(method, document path) of the routes the matrix lets a company owner past authorization."""
    allowed = set()
    for (method, spec_path), row in load_table().items():
        cell = row.expect["owner"]
        if cell.kind == "refused" and cell.status in (401, 403):
            continue
        allowed.add((method, spec_path))
    return allowed


def spec_path(path: str) -> str:
    """``/api/workflows/{workflow_id}/triggers/{trigger_id}/webhook`` in the matrix's notation."""
    from tests.test_route_matrix import _spec_path

    return _spec_path(path)


@pytest.fixture(scope="module")
async def world(client, base_url) -> World:
    w = await build_world(client, base_url)
    w.callers["super_admin"] = await w.new_user("super_admin")
    return w


async def test_openapi_document_matches_every_answer(world, base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=60)
    admin, user = world.callers["super_admin"], world.owner
    labels_all, labels_user = set(), set()
    owner_routes = owner_may_call()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        labels_all.add(operation.label)
        if (key[0], spec_path(operation.path)) in owner_routes:
            labels_user.add(operation.label)
    assert len(labels_all) >= 100 and labels_user, (len(labels_all), len(labels_user))

    # Real objects first (async, on the session's loop), then the synchronous run in a thread.
    seeding = time.monotonic()
    targets: dict[str, dict[str, dict[str, str]]] = {"user": {}, "admin": {}}
    for role, who, labels in (("user", user, labels_user), ("admin", admin, labels_all)):
        for label in labels:
            method, path = label.split(" ", 1)
            targets[role][label] = await path_targets(world, who, method, path)
    run = Run(base_url, asyncio.get_running_loop(), world, await read_settings_rows())
    started = time.monotonic()
    try:
        await asyncio.to_thread(run_as, run, schema, user, targets["user"], labels_user)
        await asyncio.to_thread(run_as, run, schema, admin, targets["admin"], labels_all)
    finally:
        await write_settings_rows(run.settings_rows)
    elapsed = time.monotonic() - started
    print(f"\ncontract: {run.operations} operation runs, {run.calls} calls in {elapsed:.0f} s "
          f"(objects seeded in {started - seeding:.0f} s)")
    report = "\n".join(str(finding) for finding in sorted(run.findings.values(), key=str))
    assert not run.findings, f"{len(run.findings)} contract failures:\n{report}"

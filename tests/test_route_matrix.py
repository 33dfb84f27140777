"""Every route, called by every kind of caller, against tests/security_matrix.tsv.

Each row of the table gets a world of its own (company C with an owner, a member
and a viewer, another tenant with a company of their own, an admin, and C's agent,
tool, workflow, task, file...), written straight to the database so that rows can
run side by side. Refused calls go first and must leave the world's rows exactly
as they were; allowed ones follow. A route the app serves without a row, or a row
for a route it does not serve, fails the test."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.auth_helpers import fresh_ip
from tests.utils.engine import chain, node
from tests.utils.fixtures import PASSWORD, password_hash

TABLE = Path(__file__).with_name("security_matrix.tsv")
ROLES = ("anonymous", "other_tenant", "viewer", "member", "owner", "admin")
PARALLEL_ROWS = 6


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Expect:
    kind: str  # ok | refused | pass | item
    status: int | None = None
    code: str | None = None

    @classmethod
    def parse(cls, cell: str) -> Expect:
        cell = cell.strip()
        if cell == "ok":
            return cls("ok")
        match = re.fullmatch(r"(?:(pass|item) )?(\d{3,4}) ([A-Z]+_\d{3})", cell)
        if not match:
            raise ValueError(f"unreadable cell {cell!r}")
        return cls(match.group(1) or "refused", int(match.group(2)), match.group(3))


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expect: dict[str, Expect]


def load_table() -> dict[tuple[str, str], Row]:
    lines = [line for line in TABLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows: dict[tuple[str, str], Row] = {}
    for record in csv.DictReader(lines, delimiter="\t"):
        key = (record["method"], record["path"])
        assert key not in rows, f"two rows for {key}"
        rows[key] = Row(*key, {role: Expect.parse(record[role]) for role in ROLES})
    return rows


def _spec_path(path: str) -> str:
    """``/api/workflows/{workflow_id}/triggers/{trigger_id}`` -> ``/api/workflows/:id/triggers/:triggerId``
    (the spec's notation: the route's object is ``:id``, further parameters keep their name)."""
    first = next(iter(re.findall(r"\{(\w+)\}", path)), None)

    def spec_name(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == first and name != "share_id":
            return ":id"
        head, *rest = name.split("_")
        return ":" + head + "".join(part.title() for part in rest)
    return re.sub(r"\{(\w+)\}", spec_name, path)


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of everything the app serves, in the spec's :id notation."""
    from fastapi.routing import APIRoute, APIWebSocketRoute
    from starlette.routing import Route

    from troupe.platform.app import create_app

    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str = "") -> None:
        for route in routes:
            original = getattr(route, "original_router", None)
            if original is not None:  # an included router (FastAPI keeps it whole)
                walk(original.routes, prefix + getattr(route, "prefix", ""))
            elif isinstance(route, APIWebSocketRoute):
                found.add(("WS", _spec_path(prefix + route.path)))
            elif isinstance(route, APIRoute | Route):
                for method in route.methods or ():
                    if method not in ("HEAD", "OPTIONS"):
                        found.add((method, _spec_path(prefix + route.path)))
            else:
                raise AssertionError(f"unknown kind of route {route!r}")

    walk(create_app().routes)
    return found


def test_every_route_has_exactly_one_row():
    served, listed = app_routes(), set(load_table())
    assert not served - listed, f"routes without a row in {TABLE.name}: {sorted(served - listed)}"
    assert not listed - served, f"rows for routes the app does not serve: {sorted(listed - served)}"
    assert not set(CASES) ^ listed, f"rows without a case here, or cases without a row: {sorted(set(CASES) ^ listed)}"


# --------------------------------------------------------------------------- callers and worlds


@dataclass
class Caller:
    role: str
    id: str | None = None
    email: str | None = None
    token: str | None = None
    user: Any = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


ANONYMOUS = Caller("anonymous")


async def _insert_user(session, role: str = "user", **fields: Any) -> Caller:
    from troupe.db import models
    from troupe.security import access_claims, create_access_token

    tag = uuid.uuid4().hex[:12]
    row = models.User(email=f"m-{tag}@example.com", username=f"m_{tag}", password_hash=await password_hash(PASSWORD),
                      first_name="Matrix", last_name=role.title(), role=role, status="active",
                      email_verified=fields.pop("email_verified", True), profile={}, preferences={}, **fields)
    session.add(row)
    await session.flush()
    token, _ = create_access_token(access_claims(user_id=str(row.id), email=row.email, username=row.username,
                                                 role=role, companies=[], token_version=0))
    return Caller(role, str(row.id), row.email, token, row)


def second_token(who: Caller) -> str:
    """Another access token of the same account (logging it out leaves ``who.token`` alive)."""
    from troupe.security import access_claims, create_access_token

    token, _ = create_access_token(access_claims(user_id=who.id, email=who.email, username=who.user.username,
                                                 role=who.user.role, companies=[], token_version=0))
    return token


CALC_SCHEMA = {"input": {"type": "object", "required": ["expression"],
                         "properties": {"expression": {"type": "string"}}}}


@dataclass
class World:
    client: Any
    base_url: str
    callers: dict[str, Caller] = field(default_factory=dict)
    user_ids: list[uuid.UUID] = field(default_factory=list)
    company: str = ""
    agent: str = ""
    tool: str = ""
    workflow: str = ""
    task: str = ""
    notification: str = ""
    memo: dict[str, Any] = field(default_factory=dict)
    client_ip: dict[str, str] = field(default_factory=fresh_ip)

    @property
    def owner(self) -> Caller:
        return self.callers["owner"]

    async def request(self, who: Caller, method: str, url: str, *, json: Any = None, **kw: Any):
        # A client address per world (the suite's client is a trusted proxy): the matrix's
        # ~900 calls do not eat the general per-IP limit the rest of the suite shares.
        headers = {**self.client_ip, **who.headers, **kw.pop("headers", {})}
        return await self.client.request(method, url, json=json, headers=headers, **kw)

    # ---- objects written straight to the database (fresh ones for routes that change or destroy)

    async def new_user(self, role: str = "user", **fields: Any) -> Caller:
        from troupe.db.session import session_scope

        async with session_scope() as session:
            who = await _insert_user(session, role, **fields)
        self.user_ids.append(uuid.UUID(who.id))
        return who

    async def new_company(self) -> str:
        from troupe.db import models
        from troupe.db.session import session_scope

        member, viewer = self.callers["member"].id, self.callers["viewer"].id
        async with session_scope() as session:
            row = models.Company(name=f"C {uuid.uuid4().hex[:6]}", type="software", status="active",
                                 owner_id=uuid.UUID(self.owner.id),
                                 team_members=[uuid.UUID(member), uuid.UUID(viewer)],
                                 member_roles={member: "member", viewer: "viewer"},
                                 settings={"maxConcurrency": 5}, metrics={}, tags=[])
            session.add(row)
            await session.flush()
            return str(row.id)

    async def _add(self, row: Any) -> str:
        from troupe.db.session import session_scope

        async with session_scope() as session:
            session.add(row)
            await session.flush()
            return str(row.id)

    async def new_agent(self, *, public: bool = False) -> str:
        from troupe.db import models

        return await self._add(models.Agent(
            name=f"ag-{uuid.uuid4().hex[:6]}", type="analytical", model="sim-1", provider="simulated",
            configuration={}, company_id=uuid.UUID(self.company), created_by=uuid.UUID(self.owner.id),
            performance={}, is_public=public,
            marketplace={"category": "c", "documentation": "d"} if public else None))

    async def new_tool(self, *, public: bool = False, install_in: str | None = None) -> str:
        from troupe.db import models

        tool_id = await self._add(models.Tool(
            name=f"tool-{uuid.uuid4().hex[:6]}", type="calculator", category="utility", configuration={},
            schema=CALC_SCHEMA, created_by=uuid.UUID(self.owner.id), is_public=public))
        if install_in:
            await self._add(models.CompanyTool(company_id=uuid.UUID(install_in), tool_id=uuid.UUID(tool_id),
                                               configuration={}, installed_by=uuid.UUID(self.owner.id)))
        return tool_id

    async def new_workflow(self) -> str:
        from troupe.db import models

        return await self._add(models.Workflow(
            name=f"wf-{uuid.uuid4().hex[:6]}", company_id=uuid.UUID(self.company),
            nodes=[node("in", "input"), node("out", "output")], edges=chain("in", "out"),
            configuration={"strategy": "hybrid", "errorHandling": "stop"}, status="active",
            created_by=uuid.UUID(self.owner.id)))

    async def new_task(self, status: str = "pending") -> str:
        from troupe.db import models

        return await self._add(models.Task(
            name="t", type="workflow", status=status, company_id=uuid.UUID(self.company),
            workflow_id=uuid.UUID(self.workflow), created_by=uuid.UUID(self.owner.id), input={}, meta={},
            tags=[], run_state={}))

    async def new_file(self) -> str:
        response = await self.request(self.owner, "POST", "/api/files/upload", files={"file": ("n.txt", b"notes")},
                                      data={"companyId": self.company})
        assert response.status_code == 201, response.text
        return response.json()["data"]["id"]

    async def once(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self.memo:
            self.memo[key] = await make()
        return self.memo[key]

    async def file(self) -> str:
        return await self.once("file", self.new_file)

    async def share(self) -> str:
        async def make() -> str:
            response = await self.request(self.owner, "POST", f"/api/files/{await self.file()}/share", json={})
            assert response.status_code == 201, response.text
            return response.json()["data"]["shareId"]
        return await self.once("share", make)

    async def company_document(self) -> dict:
        async def make() -> dict:
            response = await self.request(self.owner, "POST", f"/api/companies/{self.company}/export")
            assert response.status_code == 200, response.text
            return {**response.json()["data"], "agents": [], "workflows": []}
        return await self.once("company_document", make)

    async def workflow_document(self) -> dict:
        async def make() -> dict:
            response = await self.request(self.owner, "POST", f"/api/workflows/{self.workflow}/export")
            assert response.status_code == 200, response.text
            return response.json()["data"]
        return await self.once("workflow_document", make)


async def build_world(client, base_url: str) -> World:
    from troupe.db import models
    from troupe.db.session import session_scope

    w = World(client, base_url)
    async with session_scope() as session:
        for role in ("owner", "member", "viewer", "other_tenant", "admin"):
            w.callers[role] = await _insert_user(session, "admin" if role == "admin" else "user")
    w.callers["anonymous"] = ANONYMOUS
    w.user_ids = [uuid.UUID(c.id) for c in w.callers.values() if c.id]
    w.company = await w.new_company()
    # the other tenant has a company of their own
    await w._add(models.Company(name="theirs", type="software", status="active",
                                owner_id=uuid.UUID(w.callers["other_tenant"].id), member_roles={},
                                settings={}, metrics={}, tags=[]))
    w.agent = await w.new_agent()
    w.tool = await w.new_tool(install_in=w.company)
    w.workflow = await w.new_workflow()
    w.task = await w.new_task("completed")
    w.notification = await w._add(models.Notification(user_id=uuid.UUID(w.owner.id), type="info", title="hello",
                                                      message="m", data={}))
    return w


# --------------------------------------------------------------------------- nothing written


# table -> which of its rows belong to the world (:u = the world's user ids, C = their companies)
_WORLD_ROWS = {
    "users": "id = ANY(:u)",
    "companies": "owner_id = ANY(:u)",
    "agents": "created_by = ANY(:u) OR company_id IN (SELECT id FROM C)",
    "tools": "created_by = ANY(:u)",
    "company_tools": "company_id IN (SELECT id FROM C)",
    "workflows": "created_by = ANY(:u) OR company_id IN (SELECT id FROM C)",
    "tasks": "created_by = ANY(:u) OR company_id IN (SELECT id FROM C)",
    "files": "uploaded_by = ANY(:u) OR company_id IN (SELECT id FROM C)",
    "file_shares": "created_by = ANY(:u)",
    "notifications": "user_id = ANY(:u)",
    "agent_reviews": "user_id = ANY(:u)",
    "invitations": "company_id IN (SELECT id FROM C) OR invited_by = ANY(:u)",
    "tool_calls": "user_id = ANY(:u) OR company_id IN (SELECT id FROM C)",
    "refresh_tokens": "user_id = ANY(:u)",
    "system_settings": "true",
}
_SNAPSHOT_SQL = "WITH C AS (SELECT id FROM companies WHERE owner_id = ANY(:u)) " + " UNION ALL ".join(
    f"(SELECT '{table}' AS t, row_to_json(x)::text AS r FROM {table} x WHERE {where})"
    for table, where in _WORLD_ROWS.items())


async def snapshot(w: World) -> dict[str, list[str]]:
    """Every row of the world's users and companies, and of what they hold (one query)."""
    from sqlalchemy import text

    from troupe.db.session import session_scope

    out: dict[str, list[str]] = {table: [] for table in _WORLD_ROWS}
    async with session_scope() as session:
        for table, row in (await session.execute(text(_SNAPSHOT_SQL), {"u": w.user_ids})).all():
            out[table].append(row)
    return {table: sorted(rows) for table, rows in out.items()}


def _diff(before: dict[str, list], after: dict[str, list]) -> list[str]:
    return [name for name in before if before[name] != after[name]]


# --------------------------------------------------------------------------- the calls, one per row

# A case prepares what its call needs (fresh objects, tokens) and answers the call itself,
# not yet made: the world is looked at between the two.
Call = Callable[[], Awaitable[Any]]
Case = Callable[[World, Caller], Awaitable[Call]]
CASES: dict[tuple[str, str], Case] = {}


def case(method: str, path: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        assert (method, path) not in CASES
        CASES[(method, path)] = fn
        return fn
    return register


def simple(method: str, path: str, url: Callable[[World], str] | str, body: Any = None) -> None:
    """A row whose call needs only the world's standing objects."""
    async def run(w: World, who: Caller):
        target, payload = url(w) if callable(url) else url, body(w) if callable(body) else body
        return lambda: w.request(who, method, target, json=payload)
    case(method, path)(run)


# Lists are asked for their newest 100, so that the world's object is on the page.
NEWEST = "?limit=100&sort=createdAt&order=desc"
# list route -> (the world's object it must show to exactly those who may read it, the route that reads it)
LISTED = {
    "/api/companies": ("company", "/api/companies/:id"),
    "/api/agents": ("agent", "/api/agents/:id"),
    "/api/tools": ("tool", "/api/tools/:id"),
    "/api/workflows": ("workflow", "/api/workflows/:id"),
    "/api/tasks": ("task", "/api/tasks/:id"),
    "/api/files": ("file", "/api/files/:id"),
    "/api/notifications": ("notification", "/api/notifications/:id/read"),
}


# ---- auth


@case("POST", "/api/auth/register")
async def _register(w, who):
    tag = uuid.uuid4().hex[:10]
    body = {"email": f"reg-{tag}@example.com", "username": f"reg_{tag}", "password": PASSWORD,
            "firstName": "Reg", "lastName": "Ister"}
    return lambda: w.request(who, "POST", "/api/auth/register", json=body, headers=fresh_ip())


@case("POST", "/api/auth/login")
async def _login(w, who):
    account = await w.new_user()
    return lambda: w.request(who, "POST", "/api/auth/login", json={"email": account.email, "password": PASSWORD},
                           headers=fresh_ip())


@case("POST", "/api/auth/refresh")
async def _refresh(w, who):
    from troupe.db.session import session_scope
    from troupe.platform.auth import sessions

    account = await w.new_user()
    async with session_scope() as session:
        issued = await sessions.issue_tokens(session, await session.merge(account.user))
    return lambda: w.request(who, "POST", "/api/auth/refresh", json={"refreshToken": issued.refresh_token})


@case("POST", "/api/auth/logout")
async def _logout(w, who):
    headers = {"Authorization": f"Bearer {second_token(who)}"} if who.token else {}
    return lambda: w.client.post("/api/auth/logout", json={}, headers=headers)


simple("POST", "/api/auth/forgot-password", "/api/auth/forgot-password",
       lambda w: {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com"})


@case("POST", "/api/auth/reset-password")
async def _reset(w, who):
    from datetime import UTC, datetime

    from troupe.security import token_hash

    token = uuid.uuid4().hex
    await w.new_user(password_reset_token=token_hash(token),
                     password_reset_expires=datetime.now(UTC) + timedelta(hours=1))
    return lambda: w.request(who, "POST", "/api/auth/reset-password",
                           json={"token": token, "password": "N3w!Passw0rd-ok"})


@case("POST", "/api/auth/change-password")
async def _change_password(w, who):
    return lambda: w.request(who, "POST", "/api/auth/change-password", headers=fresh_ip(),
                           json={"currentPassword": "Wr0ng!Passw0rd", "newPassword": "N3w!Passw0rd-ok"})


@case("POST", "/api/auth/verify-email")
async def _verify(w, who):
    from troupe.platform.auth.service import _expiring_token
    from troupe.security import token_hash

    token = _expiring_token(3600)
    await w.new_user(email_verified=False, email_verification_token=token_hash(token))
    return lambda: w.request(who, "POST", "/api/auth/verify-email", json={"token": token})


# ---- users

simple("GET", "/api/users", "/api/users")
simple("GET", "/api/users/me", "/api/users/me")
simple("POST", "/api/users/invitations/accept", "/api/users/invitations/accept", {"token": "made-up-invitation"})
simple("GET", "/api/users/:id", lambda w: f"/api/users/{w.owner.id}")
simple("PUT", "/api/users/:id", lambda w: f"/api/users/{w.owner.id}", {"firstName": "Renamed"})
simple("GET", "/api/users/:id/activity", lambda w: f"/api/users/{w.owner.id}/activity")


@case("DELETE", "/api/users/:id")
async def _delete_user(w, who):
    target = (await w.new_user()).id
    return lambda: w.request(who, "DELETE", f"/api/users/{target}")


@case("PUT", "/api/users/:id/role")
async def _set_role(w, who):
    target = (await w.new_user()).id
    return lambda: w.request(who, "PUT", f"/api/users/{target}/role", json={"role": "viewer"})


@case("PUT", "/api/users/:id/status")
async def _set_status(w, who):
    target = (await w.new_user()).id
    return lambda: w.request(who, "PUT", f"/api/users/{target}/status", json={"status": "suspended"})


@case("POST", "/api/users/:id/invite")
async def _invite(w, who):
    target = (await w.new_user()).id
    return lambda: w.request(who, "POST", f"/api/users/{target}/invite",
                           json={"companyId": w.company, "role": "member"})


# ---- companies

COMPANY_BODY = {"name": "Matrix Co", "type": "software", "industry": "technology"}
simple("GET", "/api/companies", "/api/companies" + NEWEST)
simple("POST", "/api/companies", "/api/companies", COMPANY_BODY)
simple("GET", "/api/companies/:id", lambda w: f"/api/companies/{w.company}")
simple("PUT", "/api/companies/:id", lambda w: f"/api/companies/{w.company}", {"description": "changed"})
for _action in ("start", "stop", "pause", "resume"):
    simple("POST", f"/api/companies/:id/{_action}", lambda w, a=_action: f"/api/companies/{w.company}/{a}")
for _read in ("metrics", "logs", "tasks"):
    simple("GET", f"/api/companies/:id/{_read}", lambda w, r=_read: f"/api/companies/{w.company}/{r}")
simple("POST", "/api/companies/:id/duplicate", lambda w: f"/api/companies/{w.company}/duplicate", {"name": "copy"})
simple("POST", "/api/companies/:id/export", lambda w: f"/api/companies/{w.company}/export")


@case("DELETE", "/api/companies/:id")
async def _delete_company(w, who):
    target = await w.new_company()
    return lambda: w.request(who, "DELETE", f"/api/companies/{target}")


@case("POST", "/api/companies/:id/import")
async def _import_company(w, who):
    document = await w.company_document()
    return lambda: w.request(who, "POST", f"/api/companies/{w.company}/import", json={"data": document})


# ---- agents

simple("GET", "/api/agents", "/api/agents" + NEWEST)
simple("POST", "/api/agents", "/api/agents", lambda w: {
    "name": "Matrix agent", "description": "d", "type": "analytical", "model": "simulated",
    "provider": "simulated", "capabilities": ["x"], "companyId": w.company})
simple("GET", "/api/agents/:id", lambda w: f"/api/agents/{w.agent}")
simple("PUT", "/api/agents/:id", lambda w: f"/api/agents/{w.agent}", {"description": "changed"})
simple("POST", "/api/agents/:id/test", lambda w: f"/api/agents/{w.agent}/test", {"input": "hello"})
simple("POST", "/api/agents/:id/train", lambda w: f"/api/agents/{w.agent}/train",
       {"trainingData": [{"input": "2+2?", "output": "4"}]})
simple("GET", "/api/agents/:id/performance", lambda w: f"/api/agents/{w.agent}/performance")
simple("POST", "/api/agents/:id/clone", lambda w: f"/api/agents/{w.agent}/clone", {"name": "clone"})
simple("POST", "/api/agents/:id/review", lambda w: f"/api/agents/{w.agent}/review", {"rating": 4, "comment": "ok"})
simple("GET", "/api/agents/:id/reviews", lambda w: f"/api/agents/{w.agent}/reviews")


@case("DELETE", "/api/agents/:id")
async def _delete_agent(w, who):
    target = await w.new_agent()
    return lambda: w.request(who, "DELETE", f"/api/agents/{target}")


@case("POST", "/api/agents/:id/publish")
async def _publish(w, who):
    target = await w.new_agent()
    return lambda: w.request(who, "POST", f"/api/agents/{target}/publish",
                           json={"category": "c", "documentation": "d"})


@case("POST", "/api/agents/:id/unpublish")
async def _unpublish(w, who):
    target = await w.new_agent(public=True)
    return lambda: w.request(who, "POST", f"/api/agents/{target}/unpublish")


# ---- tools

TOOL_BODY = {"name": "Matrix tool", "description": "adds", "type": "calculator", "category": "utility",
             "configuration": {}, "schema": CALC_SCHEMA}
simple("GET", "/api/tools", "/api/tools" + NEWEST)
simple("POST", "/api/tools", "/api/tools", lambda w: {**TOOL_BODY, "name": f"Matrix {uuid.uuid4().hex[:6]}"})
simple("GET", "/api/tools/marketplace", "/api/tools/marketplace")
simple("GET", "/api/tools/:id", lambda w: f"/api/tools/{w.tool}")
simple("PUT", "/api/tools/:id", lambda w: f"/api/tools/{w.tool}", {"description": "changed"})
simple("POST", "/api/tools/:id/test", lambda w: f"/api/tools/{w.tool}/test", {"input": {"expression": "1+1"}})
simple("GET", "/api/tools/:id/usage", lambda w: f"/api/tools/{w.tool}/usage")


@case("DELETE", "/api/tools/:id")
async def _delete_tool(w, who):
    target = await w.new_tool(install_in=w.company)
    return lambda: w.request(who, "DELETE", f"/api/tools/{target}")


@case("POST", "/api/tools/:id/install")
async def _install(w, who):
    company, tool = await w.new_company(), await w.once("public_tool", lambda: w.new_tool(public=True))
    return lambda: w.request(who, "POST", f"/api/tools/{tool}/install", json={"companyId": company})


@case("POST", "/api/tools/:id/uninstall")
async def _uninstall(w, who):
    company = await w.new_company()
    tool = await w.new_tool(install_in=company)
    return lambda: w.request(who, "POST", f"/api/tools/{tool}/uninstall", json={"companyId": company})


# ---- workflows

simple("GET", "/api/workflows", "/api/workflows" + NEWEST)
simple("POST", "/api/workflows", "/api/workflows", lambda w: {"name": "Matrix flow", "companyId": w.company})
simple("GET", "/api/workflows/templates", "/api/workflows/templates")
simple("GET", "/api/workflows/:id", lambda w: f"/api/workflows/{w.workflow}")
simple("PUT", "/api/workflows/:id", lambda w: f"/api/workflows/{w.workflow}", {"description": "changed"})
simple("POST", "/api/workflows/:id/validate", lambda w: f"/api/workflows/{w.workflow}/validate")
simple("POST", "/api/workflows/:id/execute", lambda w: f"/api/workflows/{w.workflow}/execute", {"input": {}})
simple("POST", "/api/workflows/:id/export", lambda w: f"/api/workflows/{w.workflow}/export")
simple("GET", "/api/workflows/:id/executions", lambda w: f"/api/workflows/{w.workflow}/executions")
simple("POST", "/api/workflows/:id/schedule", lambda w: f"/api/workflows/{w.workflow}/schedule",
       {"enabled": False, "cron": "0 3 * * *"})


@case("POST", "/api/workflows/:id/triggers/:triggerId/webhook")
async def _webhook(w, who):
    from troupe.db import models
    from troupe.security import SecretBox

    async def make() -> str:
        from troupe.db.session import session_scope

        async with session_scope() as session:
            workflow = await session.get(models.Workflow, uuid.UUID(w.workflow))
            workflow.triggers = [{"id": "hook", "type": "webhook", "enabled": True,
                                  "configuration": {"secret": SecretBox().seal("s" * 24)}}]
        return "hook"
    trigger = await w.once("webhook", make)
    # a caller's bearer token, and no signature
    return lambda: w.request(who, "POST", f"/api/workflows/{w.workflow}/triggers/{trigger}/webhook", json={})


@case("DELETE", "/api/workflows/:id")
async def _delete_workflow(w, who):
    target = await w.new_workflow()
    return lambda: w.request(who, "DELETE", f"/api/workflows/{target}")


@case("POST", "/api/workflows/:id/import")
async def _import_workflow(w, who):
    document = await w.workflow_document()
    return lambda: w.request(who, "POST", f"/api/workflows/{w.workflow}/import",
                             json={"data": document, "overwrite": True})


# ---- tasks

simple("GET", "/api/tasks", "/api/tasks" + NEWEST)
simple("GET", "/api/tasks/queue", "/api/tasks/queue")
simple("POST", "/api/tasks", "/api/tasks", lambda w: {"name": "t", "type": "workflow", "companyId": w.company,
                                                      "workflowId": w.workflow})
simple("POST", "/api/tasks/batch", "/api/tasks/batch", lambda w: {"tasks": [
    {"name": "t", "type": "workflow", "companyId": w.company, "workflowId": w.workflow}]})
simple("GET", "/api/tasks/:id", lambda w: f"/api/tasks/{w.task}")
simple("GET", "/api/tasks/:id/executions", lambda w: f"/api/tasks/{w.task}/executions")
simple("GET", "/api/tasks/:id/logs", lambda w: f"/api/tasks/{w.task}/logs")


def task_case(method: str, action: str, status: str, body: Any = None) -> None:
    path = "/api/tasks/:id" + (f"/{action}" if action else "")

    async def run(w: World, who: Caller):
        task = await w.new_task(status)
        return lambda: w.request(who, method, f"/api/tasks/{task}" + (f"/{action}" if action else ""), json=body)
    case(method, path)(run)


task_case("PUT", "", "pending", {"description": "changed"})
task_case("DELETE", "", "pending")
task_case("POST", "execute", "pending", {})
task_case("POST", "cancel", "pending", {})
task_case("POST", "pause", "pending")
task_case("POST", "resume", "paused")
task_case("POST", "retry", "failed", {})

# ---- dashboard, logs, metrics, settings, notifications

for _path in ("/api/dashboard/stats", "/api/dashboard/performance", "/api/dashboard/alerts", "/api/logs",
              "/api/metrics/system", "/api/metrics/performance", "/api/metrics/business", "/api/settings",
              "/api/settings/health", "/api/settings/backups",
              "/api/files/storage/usage", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
    simple("GET", _path, _path)
simple("PUT", "/api/settings", "/api/settings", {})
simple("POST", "/api/settings/backup", "/api/settings/backup")
simple("POST", "/api/settings/restore", "/api/settings/restore", {"backupId": "no-such-backup"})
simple("GET", "/api/notifications", "/api/notifications" + NEWEST)
simple("POST", "/api/notifications/read-all", "/api/notifications/read-all")
simple("POST", "/api/notifications/:id/read", lambda w: f"/api/notifications/{w.notification}/read")

# ---- files


@case("GET", "/api/files")
async def _list_files(w, who):
    await w.file()
    return lambda: w.request(who, "GET", "/api/files" + NEWEST)


@case("POST", "/api/files/upload")
async def _upload(w, who):
    return lambda: w.request(who, "POST", "/api/files/upload", files={"file": ("a.txt", b"hello")},
                           data={"companyId": w.company})


async def _chunk(w: World, who: Caller):
    return lambda: w.request(who, "POST", "/api/files/upload/chunk", files={"chunk": ("blob", b"hello")},
                           data={"chunkIndex": "0", "totalChunks": "1", "filename": "c.txt"})


case("POST", "/api/files/upload/chunk")(_chunk)


@case("POST", "/api/files/upload/complete")
async def _complete(w, who):
    upload_id = uuid.uuid4().hex
    if who.token:  # the caller's own upload
        response = await (await _chunk(w, who))()
        assert response.status_code == 201, response.text
        upload_id = response.json()["data"]["fileId"]
    return lambda: w.request(who, "POST", "/api/files/upload/complete",
                           json={"fileId": upload_id, "totalChunks": 1, "companyId": w.company})


@case("GET", "/api/files/:id")
async def _get_file(w, who):
    target = await w.file()
    return lambda: w.request(who, "GET", f"/api/files/{target}")


@case("PUT", "/api/files/:id")
async def _put_file(w, who):
    target = await w.file()
    return lambda: w.request(who, "PUT", f"/api/files/{target}", json={"tags": ["changed"]})


@case("DELETE", "/api/files/:id")
async def _delete_file(w, who):
    target = await w.new_file()
    return lambda: w.request(who, "DELETE", f"/api/files/{target}")


@case("GET", "/api/files/:id/download")
async def _download(w, who):
    target = await w.file()
    return lambda: w.request(who, "GET", f"/api/files/{target}/download")


@case("POST", "/api/files/:id/share")
async def _share(w, who):
    target = await w.file()
    return lambda: w.request(who, "POST", f"/api/files/{target}/share", json={})


@case("GET", "/api/files/shared/:shareId")
async def _shared(w, who):
    target = await w.share()
    return lambda: w.request(who, "GET", f"/api/files/shared/{target}")


@case("POST", "/api/files/batch/delete")
async def _batch_delete(w, who):
    target = await w.new_file()
    return lambda: w.request(who, "POST", "/api/files/batch/delete", json={"fileIds": [target]})


# ---- real time


@dataclass
class WsOutcome:
    status_code: int
    code: str | None
    text: str


@case("WS", "/api/ws")
async def _ws(w, who):
    url = w.base_url.replace("http://", "ws://") + "/api/ws" + (f"?token={who.token}" if who.token else "")
    return lambda: _ws_call(url)


async def _ws_call(url: str) -> WsOutcome:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, open_timeout=20) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if first.get("type") == "error":
            try:
                await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed as closed:
                return WsOutcome(closed.rcvd.code if closed.rcvd else 1006, first["error"]["code"], str(first))
        # a 2xx-like "accepted": the connection is up and greeted
        return WsOutcome(200 if first.get("type") == "connection:status" else 500, None, str(first))


# --------------------------------------------------------------------------- judging


def _outcome(response: Any) -> tuple[int, str | None, Any]:
    if isinstance(response, WsOutcome):
        return response.status_code, response.code, response.text
    try:
        body = response.json()
    except ValueError:
        return response.status_code, None, response.text[:200]
    code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
    return response.status_code, code, body


def _item_codes(body: Any) -> list[str | None]:
    """Per-item outcomes of a batch: ``data.results`` (files: 200 with a result per item)
    or ``error.details.errors`` (tasks: all or nothing, 422 naming each refused item)."""
    if not isinstance(body, dict):
        return []
    results = (body.get("data") or {}).get("results") if isinstance(body.get("data"), dict) else None
    if results is not None:
        return [None if r.get("success") else (r.get("error") or {}).get("code") for r in results]
    errors = ((body.get("error") or {}).get("details") or {}).get("errors")
    return [e.get("code") for e in errors] if isinstance(errors, list) else []


def judge(expect: Expect, response: Any) -> str | None:
    """None when the answer is the expected one, else what was seen."""
    status, code, body = _outcome(response)
    if expect.kind == "ok":
        good = 200 <= status < 300
    elif expect.kind == "item":
        good = status in (200, 422) and _item_codes(body) == [expect.code]
    else:
        good = status == expect.status and code == expect.code
    return None if good else f"got {status} {code}: {str(body)[:300]}"


def _ids(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {str(value["id"])} if "id" in value else set()
        return found.union(*(_ids(v) for k, v in value.items() if isinstance(v, list | dict) and k != "id"))
    if isinstance(value, list):
        return set().union(*(_ids(v) for v in value))
    return set()


async def listing_problem(w: World, path: str, role: str, response: Any,
                          table: dict[tuple[str, str], Row]) -> str | None:
    """A list shows the world's object to exactly those who may read it (admins see every tenant,
    so the newest page need not hold it: their reading is the ``GET /:id`` row's business)."""
    attribute, reader = LISTED[path]
    target = await w.file() if attribute == "file" else getattr(w, attribute)
    may_read = next(r for (m, p), r in table.items() if p == reader).expect[role].kind == "ok"
    listed = target in _ids(response.json()["data"])
    if listed != may_read:
        return f"the list {'leaves out' if may_read else 'shows'} the {attribute} {target}"
    return None


async def _call(call: Call) -> Any:
    """The answer; a 503 (a backing service slow on the shared test machine) is asked again."""
    for attempt in range(4):
        response = await call()
        if getattr(response, "status_code", None) != 503 or attempt == 3:
            return response
        await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class Finding:
    method: str
    path: str
    role: str
    expected: Expect
    problem: str

    def __str__(self) -> str:
        e = self.expected
        want = "ok" if e.kind == "ok" else f"{e.kind} {e.status} {e.code}"
        return f"{self.method} {self.path} as {self.role}: expected {want}, {self.problem}"


async def run_row(row: Row, table: dict[tuple[str, str], Row], client, base_url: str) -> list[Finding]:
    w = await build_world(client, base_url)
    prepare = CASES[(row.method, row.path)]
    # Refused calls first, so that nothing an allowed call set going can move the world under them.
    refused_first = sorted(ROLES, key=lambda r: row.expect[r].kind == "ok")
    findings = []
    for role in refused_first:
        expect, who = row.expect[role], w.callers[role]
        try:
            call = await prepare(w, who)
            before = await snapshot(w) if expect.kind in ("refused", "item") else None
            response = await _call(call)
            problem = judge(expect, response)
            if problem is None and row.method == "GET" and row.path in LISTED and role not in ("anonymous", "admin"):
                problem = await listing_problem(w, row.path, role, response, table)
            if problem is None and before is not None:
                changed = _diff(before, await snapshot(w))
                if changed:
                    problem = f"refused, but wrote to {changed}"
        except Exception as exc:  # noqa: BLE001 - reported with its cell, not as a crash of the whole matrix
            problem = f"raised {exc!r}"
        if problem:
            findings.append(Finding(row.method, row.path, role, expect, problem))
    return findings


async def test_route_matrix(client, base_url):
    rows = load_table()
    gate = asyncio.Semaphore(PARALLEL_ROWS)

    async def one(row: Row) -> list[Finding]:
        async with gate:
            return await run_row(row, rows, client, base_url)

    findings = [f for group in await asyncio.gather(*(one(r) for r in rows.values())) for f in group]
    assert not findings, f"{len(findings)} cells differ from {TABLE.name}:\n" + "\n".join(map(str, findings))

"""/api/ws through Serve with real WebSocket clients: protocol, rooms, access,
limits, replay, two replicas, and notifications."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.utils.fixtures import assert_error, assert_ok
from troupe.infra.mail import read_outbox

# --- helpers


class Client:
    """A test WebSocket client that skips heartbeats and remembers what it saw."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # read while waiting for a response

    async def send(self, type_: str, payload: dict | None = None, *, id_: str | None = None) -> str:
        id_ = id_ or uuid.uuid4().hex[:8]
        await self.ws.send(json.dumps({"id": id_, "type": type_, "payload": payload or {},
                                       "timestamp": "2026-01-01T00:00:00Z"}))
        return id_

    async def recv(self, wait: float = 10) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop(0)
        return await self._read(wait)

    async def expect(self, type_: str, *, id_: str | None = None, wait: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + wait
        while True:
            msg = await self.recv(max(0.05, deadline - time.monotonic()))
            if msg["type"] == type_ and (id_ is None or msg.get("id") == id_):
                return msg

    async def request(self, type_: str, payload: dict | None = None) -> dict[str, Any]:
        """Send and return the response carrying the request id (a result or an error)."""
        id_ = await self.send(type_, payload)
        deadline = time.monotonic() + 10
        held: list[dict[str, Any]] = []
        while True:
            msg = await self._read(max(0.05, deadline - time.monotonic()))
            if msg.get("id") == id_:
                self.pending.extend(held)
                return msg
            held.append(msg)

    async def _read(self, wait: float) -> dict[str, Any]:
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
            if msg["type"] == "connection:status" and (msg["payload"] or {}).get("reason") == "heartbeat":
                continue
            self.seen.append(msg)
            return msg

    async def quiet(self, seconds: float = 0.6) -> list[dict[str, Any]]:
        """Everything (except heartbeats) received within ``seconds``."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    async def closed(self, wait: float = 10) -> tuple[int | None, list[dict[str, Any]]]:
        """Read until the server closes; returns the close code and the frames before it."""
        frames: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(wait):
                while True:
                    frames.append(json.loads(await self.ws.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), frames
        raise AssertionError("server did not close")


async def keepalive(client: Client, every: float = 0.5) -> None:
    while True:
        await asyncio.sleep(every)
        await client.send("ping")


def ws_url(base_url: str, token: str | None, prefix: str = "", **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in ({"token": token} if token else {}).items() | params.items())
    return base_url.replace("http://", "ws://") + f"{prefix}/api/ws" + (f"?{query}" if query else "")


class _Session:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Client:
        self._cm = connect(self.url, open_timeout=20, max_size=4 * 1024 * 1024)
        ws = await self._cm.__aenter__()
        self.client = Client(ws)
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self._cm.__aexit__(*exc)


def session_for(base_url: str, token: str | None, prefix: str = "", **params: str) -> _Session:
    return _Session(ws_url(base_url, token, prefix, **params))


async def connected(base_url: str, token: str, prefix: str = "", **params) -> tuple[_Session, Client]:
    sess = session_for(base_url, token, prefix, **params)
    client = await sess.__aenter__()
    hello = await client.expect("connection:status")
    assert hello["payload"]["status"] == "connected"
    return sess, client


async def make_tenant(owner_id: str, *, members: dict[str, str] | None = None) -> dict[str, str]:
    """A company with one agent and one task, straight in the database."""
    from troupe.db import models
    from troupe.db.session import session_scope

    members = members or {}
    async with session_scope() as session:
        company = models.Company(name=f"Co {uuid.uuid4().hex[:6]}", type="software", owner_id=uuid.UUID(owner_id),
                                 team_members=[uuid.UUID(m) for m in members], member_roles=members,
                                 settings={}, metrics={})
        session.add(company)
        await session.flush()
        agent = models.Agent(name="Writer", type="creative", model="sim-1", provider="simulated",
                             company_id=company.id, created_by=uuid.UUID(owner_id), configuration={})
        task = models.Task(name="Write", type="single_agent", company_id=company.id, created_by=uuid.UUID(owner_id),
                           run_state={})
        session.add_all([agent, task])
        await session.flush()
        return {"company": str(company.id), "agent": str(agent.id), "task": str(task.id)}


def mint_token(user, *, lifetime: int) -> str:
    import jwt

    from troupe.config import get_settings
    from troupe.rbac import role_permissions

    now = int(time.time())
    claims = {"sub": user.id, "email": user.email, "username": user.username, "role": user.role,
              "permissions": sorted(role_permissions(user.role)), "companies": [], "iat": now,
              "exp": now + lifetime, "jti": str(uuid.uuid4()), "tv": 0}
    return jwt.encode(claims, get_settings().resolved_jwt_secret(), algorithm="HS256")


async def publish(rooms: list[str], type_: str, payload: dict, **kw) -> dict:
    from troupe.events.bus import publish as bus_publish

    return await bus_publish(rooms, type_, payload, **kw)


# --- handshake and envelope


async def test_connect_ping_pong_and_envelope(base_url, user):
    sess, c = await connected(base_url, user.token)
    try:
        hello = c.seen[-1]
        assert hello["payload"]["userId"] == user.id
        assert set(hello["payload"]["rooms"]) == {f"user:{user.id}", "global"}
        assert hello["timestamp"].endswith("Z")
        id_ = await c.send("ping", {"timestamp": "2026-01-01T00:00:00Z"}, id_="p-1")
        pong = await c.expect("pong", id_=id_)
        assert pong["payload"]["timestamp"] == "2026-01-01T00:00:00Z"
        assert pong["payload"]["serverTime"].endswith("Z")
    finally:
        await sess.__aexit__(None, None, None)


@pytest.mark.parametrize("kind", ["missing", "tampered", "garbage"])
async def test_bad_token_is_refused_with_ws001(base_url, user, kind):
    token = {"missing": None, "tampered": user.token[:-3] + ("aaa" if not user.token.endswith("aaa") else "bbb"),
             "garbage": "not-a-jwt"}[kind]
    async with session_for(base_url, token) as c:
        code, frames = await c.closed()
    assert code == 4001
    assert frames[-1]["type"] == "error"
    assert frames[-1]["error"]["code"] == "WS_001"
    assert frames[-1]["error"]["recoverable"] is False


async def test_expired_token_is_refused_with_ws008(base_url, user):
    async with session_for(base_url, mint_token(user, lifetime=-10)) as c:
        code, frames = await c.closed()
    assert code == 4008
    assert frames[-1]["error"]["code"] == "WS_008"


async def test_token_expiring_mid_connection_closes_it(base_url, user):
    sess, c = await connected(base_url, mint_token(user, lifetime=3))
    try:
        assert (await c.request("ping"))["type"] == "pong"
        code, frames = await c.closed(wait=10)
        assert code == 4008
        assert frames[-1]["error"]["code"] == "WS_008"
    finally:
        await sess.__aexit__(None, None, None)


async def test_revoked_token_is_closed_on_next_message(base_url, user_factory):
    from troupe.infra.redis import get_redis
    from troupe.platform.deps import revoked_jti_key
    from troupe.security import decode_access_token

    member = await user_factory("user")
    sess, c = await connected(base_url, member.token)
    try:
        await get_redis().set(revoked_jti_key(decode_access_token(member.token)["jti"]), "1", ex=3600)
        await c.send("ping")
        code, frames = await c.closed()
        assert code == 4008
        assert frames[-1]["error"]["code"] == "WS_008"
    finally:
        await sess.__aexit__(None, None, None)


# --- bad input


async def test_bad_messages_get_ws002_and_keep_the_socket(base_url, user):
    sess, c = await connected(base_url, user.token)
    try:
        await c.ws.send("{not json")
        err = await c.expect("error")
        assert err["error"]["code"] == "WS_002" and err["error"]["recoverable"] is True

        await c.ws.send(json.dumps([1, 2, 3]))
        assert (await c.expect("error"))["error"]["code"] == "WS_002"

        unknown = await c.request("teleport", {})
        assert unknown["error"]["code"] == "WS_002"
        assert "subscribe" in unknown["error"]["details"]["allowed"]

        missing = await c.request("send_message", {"room": "global"})
        assert missing["error"]["code"] == "WS_002"
        assert any(d["field"] == "message" for d in missing["error"]["details"])

        bad_room = await c.request("join_room", {"room": "company:../../etc"})
        assert bad_room["error"]["code"] == "WS_002"

        extra = await c.request("ping", {"timestamp": 1, "evil": True})
        assert extra["error"]["code"] == "WS_002"

        assert (await c.request("ping"))["type"] == "pong"  # still open
    finally:
        await sess.__aexit__(None, None, None)


async def test_oversize_frame_closes_with_4002(base_url, user):
    from troupe.config import get_settings

    sess, c = await connected(base_url, user.token)
    try:
        await c.ws.send(json.dumps({"id": "big", "type": "ping",
                                    "payload": {"timestamp": "x" * (get_settings().ws_max_message_bytes + 10)}}))
        code, frames = await c.closed()
        assert code == 4002
        assert frames[-1]["error"]["code"] == "WS_002"
    finally:
        await sess.__aexit__(None, None, None)


async def test_flood_beyond_rate_limit_gets_ws005(base_url, user):
    from troupe.config import get_settings

    rate = get_settings().ws_messages_per_second
    sess, c = await connected(base_url, user.token)
    try:
        for i in range(rate * 2):
            await c.send("ping", id_=f"f{i}")
        got = [await c.recv() for _ in range(rate * 2)]
        limited = [m for m in got if m["type"] == "error"]
        assert limited and all(m["error"]["code"] == "WS_005" and m["error"]["recoverable"] for m in limited)
        assert len([m for m in got if m["type"] == "pong"]) <= rate
        await asyncio.sleep(1.1)
        assert (await c.request("ping"))["type"] == "pong"  # the window moved on
    finally:
        await sess.__aexit__(None, None, None)


# --- rooms and access


async def test_room_access_matrix(base_url, user_factory):
    owner, stranger, viewer, admin = (await user_factory("user"), await user_factory("user"),
                                      await user_factory("viewer"), await user_factory("admin"))
    member = await user_factory("viewer")
    a = await make_tenant(owner.id, members={member.id: "viewer"})
    b = await make_tenant(stranger.id)
    cases = [
        (owner, f"company:{a['company']}", True), (owner, f"task:{a['task']}", True),
        (owner, f"agent:{a['agent']}", True), (owner, f"company:{b['company']}", False),
        (owner, f"task:{b['task']}", False), (owner, f"agent:{b['agent']}", False),
        (stranger, f"company:{a['company']}", False), (stranger, f"company:{b['company']}", True),
        (member, f"company:{a['company']}", True), (member, f"task:{a['task']}", True),
        (member, f"company:{b['company']}", False),
        (viewer, f"company:{a['company']}", False), (viewer, f"task:{a['task']}", False),
        (admin, f"company:{a['company']}", True), (admin, f"task:{b['task']}", True),
        (admin, f"agent:{b['agent']}", True), (admin, "admin", True),
        (owner, "admin", False), (viewer, "admin", False),
        (owner, f"user:{owner.id}", True), (owner, f"user:{stranger.id}", False),
        (admin, f"user:{owner.id}", False),
        (viewer, "global", True), (owner, "global", True),
        (owner, f"company:{uuid.uuid4()}", False),
    ]
    for who, room, allowed in cases:
        sess, c = await connected(base_url, who.token)
        try:
            reply = await c.request("join_room", {"room": room})
            if allowed:
                assert reply["type"] == "join_room", (who.role, room, reply)
                assert reply["payload"]["room"] == room
            else:
                assert reply["type"] == "error", (who.role, room, reply)
                assert reply["error"]["code"] == "WS_004"
        finally:
            await sess.__aexit__(None, None, None)


async def test_room_update_and_chat(base_url, user_factory):
    from sqlalchemy import select

    from troupe.db import models
    from troupe.db.session import session_scope

    owner, member = await user_factory("user"), await user_factory("user")
    t = await make_tenant(owner.id, members={member.id: "member"})
    room = f"company:{t['company']}"
    s1, c1 = await connected(base_url, owner.token)
    s2, c2 = await connected(base_url, member.token)
    try:
        joined = await c1.request("join_room", {"room": room})
        assert joined["payload"]["memberCount"] == 1
        await c1.expect("room:update")  # its own join
        assert (await c2.request("join_room", {"room": room}))["payload"]["memberCount"] == 2
        update = await c1.expect("room:update")
        assert update["payload"]["action"] == "joined"
        assert update["payload"]["userId"] == member.id
        assert update["payload"]["memberCount"] == 2
        assert {m["username"] for m in update["payload"]["members"]} == {owner.username, member.username}

        sent = await c2.request("send_message", {"room": room, "message": "hello team", "metadata": {"k": 1}})
        assert sent["type"] == "send_message"
        for c in (c1, c2):
            chat = await c.expect("chat:message")
            assert chat["payload"]["message"] == "hello team"
            assert chat["payload"]["userId"] == member.id
            assert chat["payload"]["username"] == member.username
            assert chat["payload"]["room"] == room
            assert chat["streamId"]
        async with session_scope() as session:
            rows = (await session.scalars(select(models.ChatMessage).where(models.ChatMessage.room == room))).all()
        assert [(r.content, str(r.user_id), r.data["metadata"]) for r in rows] == [
            ("hello team", member.id, {"k": 1})]

        left = await c2.request("leave_room", {"room": room})
        assert left["type"] == "leave_room"
        update = await c1.expect("room:update")
        assert update["payload"]["action"] == "left" and update["payload"]["memberCount"] == 1
        not_in = await c2.request("send_message", {"room": room, "message": "still here?"})
        assert not_in["error"]["code"] == "WS_004"
        not_again = await c2.request("leave_room", {"room": room})
        assert not_again["error"]["code"] == "WS_004"
        global_post = await c2.request("send_message", {"room": "global", "message": "hi all"})
        assert global_post["error"]["code"] == "WS_009"
    finally:
        await s1.__aexit__(None, None, None)
        await s2.__aexit__(None, None, None)


# --- subscriptions and every server event type


async def test_subscriptions_filters_and_event_types(base_url, user_factory):
    owner, stranger, admin = await user_factory("user"), await user_factory("user"), await user_factory("admin")
    a = await make_tenant(owner.id)
    b = await make_tenant(stranger.id)
    other_task = (await make_tenant(owner.id))["task"]
    s1, c = await connected(base_url, owner.token)
    s2, adm = await connected(base_url, admin.token)
    try:
        denied = await c.request("subscribe", {"events": ["task:progress"], "filters": {"taskId": b["task"]}})
        assert denied["error"]["code"] == "WS_009"
        denied = await c.request("subscribe", {"events": ["company:status"], "filters": {"companyId": b["company"]}})
        assert denied["error"]["code"] == "WS_009"
        denied = await c.request("subscribe", {"events": ["task:progress"], "filters": {"userId": stranger.id}})
        assert denied["error"]["code"] == "WS_009"
        bad = await c.request("subscribe", {"events": ["task:progress"], "filters": {"taskId": "nope"}})
        assert bad["error"]["code"] == "WS_003"
        bad = await c.request("subscribe", {"events": ["task:teleport"]})
        assert bad["error"]["code"] == "WS_003"
        bad = await c.request("subscribe", {})
        assert bad["error"]["code"] == "WS_003"

        ok_ = await c.request("subscribe", {"events": ["task:progress"], "filters": {"taskId": a["task"]}})
        assert ok_["payload"]["rooms"] == [f"task:{a['task']}"]
        ok_ = await c.request("subscribe", {"events": ["company:status", "agent:activity"],
                                            "filters": {"companyId": a["company"]}})
        assert ok_["payload"]["rooms"] == [f"company:{a['company']}"]
        ok_ = await c.request("subscribe", {"events": ["agent:activity"], "filters": {"agentId": a["agent"]}})
        assert ok_["payload"]["rooms"] == [f"agent:{a['agent']}"]
        ok_ = await adm.request("subscribe", {"events": ["system:alert"]})
        assert "admin" in ok_["payload"]["rooms"]

        progress = {"taskId": a["task"], "progress": 40, "status": "running", "currentStep": "draft",
                    "totalSteps": 3, "metadata": {"tokensUsed": 10, "cost": 0.001}}
        await publish([f"task:{other_task}"], "task:progress", {**progress, "taskId": other_task})
        await publish([f"task:{a['task']}", f"company:{a['company']}"], "task:progress", progress,
                      company_id=a["company"])
        got = await c.expect("task:progress")
        assert got["payload"] == progress
        assert got["companyId"] == a["company"]

        status = {"companyId": a["company"], "status": "active",
                  "metrics": {"activeTasks": 1, "queueSize": 0, "resourceUsage": 0.2}}
        await publish([f"company:{a['company']}"], "company:status", status, company_id=a["company"])
        assert (await c.expect("company:status"))["payload"] == status

        activity = {"agentId": a["agent"], "activity": "started", "details": {"taskId": a["task"]}}
        await publish([f"agent:{a['agent']}", f"company:{a['company']}"], "agent:activity", activity)
        assert (await c.expect("agent:activity"))["payload"] == activity
        # Through two of its subscriptions, delivered once.
        assert not [m for m in await c.quiet(0.5) if m["type"] == "agent:activity"]

        note = {"id": str(uuid.uuid4()), "level": "success", "title": "Done", "message": "Task finished",
                "category": "task", "persistent": False, "autoClose": 5}
        await publish([f"user:{owner.id}"], "notification", note, user_id=owner.id)
        assert (await c.expect("notification"))["payload"] == note

        alert = {"id": str(uuid.uuid4()), "severity": "high", "title": "Redis slow", "description": "p99 up",
                 "source": "monitor", "affectedServices": ["redis"], "recommendedActions": ["check"],
                 "timestamp": "2026-01-01T00:00:00Z"}
        await publish(["admin"], "system:alert", alert)
        assert (await adm.expect("system:alert"))["payload"] == alert
        # Another tenant's events never arrive.
        await publish([f"company:{b['company']}"], "company:status", {"companyId": b["company"], "status": "idle"})
        await publish(["admin"], "system:alert", alert)
        assert not [m for m in await c.quiet(0.6) if m["type"] in ("company:status", "system:alert")]

        gone = await c.request("unsubscribe", {"events": ["task:progress"]})
        assert gone["payload"]["events"] == ["task:progress"]
        assert "task:progress" not in gone["payload"]["remaining"]
        await publish([f"task:{a['task']}"], "task:progress", progress)
        assert not [m for m in await c.quiet(0.6) if m["type"] == "task:progress"]
    finally:
        await s1.__aexit__(None, None, None)
        await s2.__aexit__(None, None, None)


# --- replay


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(base_url, user):
    t = await make_tenant(user.id)
    room = f"company:{t['company']}"
    sess, c = await connected(base_url, user.token)
    try:
        await c.request("join_room", {"room": room})
        await publish([room], "company:status", {"companyId": t["company"], "status": "active", "message": "e1"})
        seen = await c.expect("company:status")
    finally:
        await sess.__aexit__(None, None, None)
    last = seen["streamId"]
    for i in (2, 3, 4):
        await publish([room], "company:status", {"companyId": t["company"], "status": "active", "message": f"e{i}"})
    await publish([f"company:{uuid.uuid4()}"], "company:status", {"companyId": "x", "status": "idle"})
    await publish([f"user:{user.id}"], "notification", {"id": "n1", "level": "info", "title": "t", "message": "m",
                                                        "category": "task"})

    sess, c = await connected(base_url, user.token, lastEventId=last)
    try:
        # The handshake replays the personal room; the join replays the company room.
        missed_personal = await c.expect("notification")
        assert missed_personal["payload"]["id"] == "n1"
        summary = await c.expect("resume")
        assert summary["payload"]["replayed"] == 1
        id_ = await c.send("join_room", {"room": room, "lastEventId": last})
        replayed = []
        while True:
            msg = await c.recv()
            if msg.get("id") == id_:
                ack = msg
                break
            if msg["type"] == "company:status":
                replayed.append(msg)
        assert [m["payload"]["message"] for m in replayed] == ["e2", "e3", "e4"]
        # Besides e2-e4 the room also recorded the earlier socket leaving it.
        # (and, depending on timing, this socket's own join, delivered once either way).
        assert ack["payload"]["replay"]["replayed"] in (4, 5)
        received = [m["streamId"] for m in c.seen if m.get("streamId")]
        assert len(received) == len(set(received))
        ids = [m["streamId"] for m in replayed]
        assert ids == sorted(ids, key=lambda s: tuple(map(int, s.split("-"))))
        await publish([room], "company:status", {"companyId": t["company"], "status": "active", "message": "e5"})
        live = [m for m in await c.quiet(1.0) if m["type"] == "company:status"]
        assert [m["payload"]["message"] for m in live] == ["e5"]
        # Resuming again from the same point sends nothing twice to this socket.
        again = await c.request("resume", {"lastEventId": last})
        assert again["type"] == "resume" and again["payload"]["replayed"] == 0
        received = [m["streamId"] for m in c.seen if m.get("streamId")]
        assert len(received) == len(set(received))
    finally:
        await sess.__aexit__(None, None, None)

    async with session_for(base_url, user.token, lastEventId="bogus") as bad:
        code, frames = await bad.closed()
    assert code == 4003 and frames[-1]["error"]["code"] == "WS_002"


# --- notifications


async def test_notify_persists_delivers_live_and_lists(base_url, client, user_factory):
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.platform.notifications.service import notify

    someone = await user_factory("user")
    async with session_scope() as session:
        row = await session.get(models.User, uuid.UUID(someone.id))
        row.preferences = {"notifications": {"email": True, "taskCompletion": True}}
    sess, c = await connected(base_url, someone.token)
    try:
        async with session_scope() as session:
            result = await notify(session=session, user_id=someone.id, type="completion", title="Run finished",
                                  message="Your task completed", data={"taskId": "t1"}, category="task",
                                  priority="high")
        assert result.channels == {"websocket": "sent", "email": "sent", "webhook": "skipped"}
        mails = [m for m in read_outbox(someone.email) if m["subject"] == "[Troupe] Run finished"]
        assert len(mails) == 1 and "Your task completed" in mails[0]["body"]
        live = await c.expect("user:notification")
        assert live["payload"]["id"] == result.notification.id
        assert live["payload"]["read"] is False
        assert live["payload"]["type"] == "completion"
        assert live["payload"]["data"] == {"taskId": "t1"}
        assert live["payload"]["createdAt"].endswith("Z")
    finally:
        await sess.__aexit__(None, None, None)

    async with session_scope() as session:
        await notify(session=session, user_id=someone.id, type="mention", title="Hi", message="you were mentioned")
    data = assert_ok(await client.get("/api/notifications", headers=someone.headers))
    assert data["unread"] == 2 and len(data["items"]) == 2
    assert data["items"][0]["type"] == "mention"  # newest first
    first = result.notification.id
    marked = assert_ok(await client.post(f"/api/notifications/{first}/read", headers=someone.headers))
    assert marked["read"] is True and marked["readAt"]
    data = assert_ok(await client.get("/api/notifications?unread=true", headers=someone.headers))
    assert [n["type"] for n in data["items"]] == ["mention"] and data["unread"] == 1
    assert assert_ok(await client.post("/api/notifications/read-all", headers=someone.headers))["updated"] == 1
    assert assert_ok(await client.get("/api/notifications", headers=someone.headers))["unread"] == 0

    other = await user_factory("user")
    assert_error(await client.post(f"/api/notifications/{first}/read", headers=other.headers), 404, "RES_001")
    assert_error(await client.post("/api/notifications/not-a-uuid/read", headers=other.headers), 422, "VAL_003")
    assert_error(await client.get("/api/notifications"), 401, "AUTH_001")
    assert assert_ok(await client.get("/api/notifications", headers=other.headers))["items"] == []
    with pytest.raises(Exception) as bad:
        async with session_scope() as session:
            await notify(session=session, user_id=someone.id, type="spam", title="x", message="y")
    assert "type" in str(bad.value)


async def test_notification_channels_follow_the_users_settings(client, user_factory):
    """Webhook through the outbound guard to a real HTTP server; switched off per kind
    by the user; and a finished run notifies its creator through the same channels."""
    from aiohttp import web

    from tests.utils.engine import chain, make_company, make_workflow, node
    from tests.utils.stub_http import StubServer
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.platform.notifications.service import notify

    async def ok_(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    server = StubServer()
    server.route("POST", "/hook", ok_)
    await server.start()
    someone = await user_factory("user")
    try:
        async with session_scope() as session:
            row = await session.get(models.User, uuid.UUID(someone.id))
            row.preferences = {"notifications": {"webhook": f"{server.url}/hook", "email": False,
                                                 "systemAlerts": False}}
        async with session_scope() as session:
            sent = await notify(session=session, user_id=someone.id, type="assignment", title="New task",
                                message="You were assigned", category="task")
        assert sent.channels == {"websocket": "sent", "email": "skipped", "webhook": "sent"}
        hook = server.received[-1].json()
        assert hook["event"] == "user:notification" and hook["notification"]["id"] == sent.notification.id
        assert server.received[-1].headers["idempotency-key"] == f"notification-{sent.notification.id}"
        # systemAlerts: false keeps system notices off the external channels (still stored and live).
        async with session_scope() as session:
            quiet = await notify(session=session, user_id=someone.id, type="error", title="Disk",
                                 message="almost full", category="system")
        assert quiet.channels["webhook"] == "skipped" and len(server.received) == 1

        # The engine's notice of a finished run takes the same path, from the company actor.
        company = await make_company(someone.id)
        workflow = await make_workflow(company, someone.id, [node("input", "input"), node("output", "output")],
                                       chain("input", "output"), strategy="sequential")
        task = assert_ok(await client.post("/api/tasks", headers=someone.headers, json={
            "name": "hooked", "type": "workflow", "companyId": company, "workflowId": workflow, "input": {}}), 201)
        assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=someone.headers, json={}), 202)
        for _ in range(300):  # the run is short; its notice follows it
            if len(server.received) >= 2:
                break
            await asyncio.sleep(0.2)
        done = server.received[-1].json()["notification"]
        assert (done["type"], done["category"], done["data"]) == ("completion", "task", {"taskId": task["id"]})
        listed = assert_ok(await client.get("/api/notifications?category=task", headers=someone.headers))
        assert done["id"] in [n["id"] for n in listed["items"]]
    finally:
        await server.stop()


# --- the bounded send queue (in process: Serve's own proxy buffers between replica and client)


async def test_slow_consumer_is_disconnected_not_buffered(stack):
    from troupe.config import get_settings
    from troupe.platform.deps import Principal
    from troupe.platform.realtime.connection import Connection
    from troupe.platform.realtime.hub import Hub

    class StuckSocket:
        def __init__(self) -> None:
            self.closed_with: int | None = None

        async def send_text(self, text: str) -> None:
            await asyncio.sleep(3600)

        async def close(self, code: int = 1000, reason: str = "") -> None:
            self.closed_with = code

    ws = StuckSocket()
    user = Principal(id=uuid.uuid4(), email="x@example.com", username="x", role="user", permissions=frozenset(),
                     jti="j", exp=int(time.time()) + 60)
    conn = Connection(ws, user, Hub(), avatar=None)  # type: ignore[arg-type]
    size = get_settings().ws_send_queue_size
    event = {"type": "task:progress", "payload": {}}
    for i in range(size + 5):
        conn.offer(event, [f"user:{user.id}"], f"1-{i}", "{}")
    await asyncio.sleep(0.05)
    assert conn.closed
    assert ws.closed_with == 4007
    assert conn.queue.qsize() == size


# --- two replicas, Ray tasks, limits that need small settings


@pytest.fixture(scope="module")
def replica_b(stack):
    """A second Serve application of the same ingress, with small WS limits."""
    from ray import serve

    from troupe.platform.ingress import build

    env = {k: v for k, v in stack.items() if k != "base_url"}
    env.update({"WS_HEARTBEAT_INTERVAL": "700", "WS_CONNECTION_TIMEOUT": "2500",
                "WS_MAX_CONNECTIONS_PER_USER": "3"})
    serve.run(build(env), name="replica_b", route_prefix="/b")
    yield "/b"
    try:
        serve.delete("replica_b")
    except Exception:  # noqa: S110 - already deleted by the shutdown test
        pass


async def test_events_cross_replicas_and_ray_tasks(base_url, replica_b, user_factory):
    import ray

    owner, member = await user_factory("user"), await user_factory("user")
    t = await make_tenant(owner.id, members={member.id: "member"})
    room = f"company:{t['company']}"
    sa, on_a = await connected(base_url, owner.token)
    sb, on_b = await connected(base_url, member.token, replica_b)
    # Replica B closes idle sockets quickly; a client keeps itself alive with pings.
    pinger = asyncio.create_task(keepalive(on_b))
    try:
        await on_a.request("join_room", {"room": room})
        await on_b.request("join_room", {"room": room})
        await on_b.request("subscribe", {"events": ["task:progress"], "filters": {"taskId": t["task"]}})
        # A chat sent through replica A reaches the client on replica B.
        await on_a.request("send_message", {"room": room, "message": "from A"})
        assert (await on_b.expect("chat:message"))["payload"]["message"] == "from A"

        @ray.remote(num_cpus=0)
        def progress_from_a_task(task_id: str, company_id: str, steps: int) -> list[str]:
            from troupe.events.bus import publish as bus_publish

            async def run() -> list[str]:
                ids = []
                for i in range(1, steps + 1):
                    event = await bus_publish([f"task:{task_id}", f"company:{company_id}"], "task:progress",
                                              {"taskId": task_id, "progress": i * 100 // steps,
                                               "status": "completed" if i == steps else "running",
                                               "currentStep": f"step {i}", "totalSteps": steps},
                                              company_id=company_id)
                    ids.append(event["streamId"])
                return ids

            return asyncio.run(run())

        ids = await progress_from_a_task.remote(t["task"], t["company"], 5)
        got = [await on_b.expect("task:progress") for _ in range(5)]
        assert [m["payload"]["progress"] for m in got] == [20, 40, 60, 80, 100]
        assert [m["streamId"] for m in got] == ids
        assert got[-1]["payload"]["status"] == "completed"
        assert [m["payload"]["progress"] for m in [await on_a.expect("task:progress") for _ in range(5)]] == [
            20, 40, 60, 80, 100]
    finally:
        pinger.cancel()
        await sa.__aexit__(None, None, None)
        await sb.__aexit__(None, None, None)


async def test_heartbeat_idle_timeout_and_connection_limit(base_url, replica_b, user_factory):
    someone = await user_factory("user")
    sess, c = await connected(base_url, someone.token, replica_b)
    try:
        beat = json.loads(await asyncio.wait_for(c.ws.recv(), 5))
        assert beat["type"] == "connection:status" and beat["payload"]["reason"] == "heartbeat"
        code, frames = await c.closed(wait=10)
        assert code == 4000
        assert frames[-1]["error"]["code"] == "WS_007"
    finally:
        await sess.__aexit__(None, None, None)

    # The per-user count is kept in Redis: sockets on replica A count on replica B.
    limited = await user_factory("user")
    open_ = [await connected(base_url, limited.token), await connected(base_url, limited.token, replica_b),
             await connected(base_url, limited.token, replica_b)]
    try:
        async with session_for(base_url, limited.token, replica_b) as extra:
            code, frames = await extra.closed()
        assert code == 4029 and frames[-1]["error"]["code"] == "WS_005"
    finally:
        for s, _ in open_:
            await s.__aexit__(None, None, None)
    await asyncio.sleep(0.5)
    sess, c = await connected(base_url, limited.token, replica_b)  # slots were released
    await sess.__aexit__(None, None, None)


async def test_draining_serve_replica_says_goodbye_and_closes_1001(stack, user_factory):
    """Deleting an application drains its replica: Serve waits for open sockets,
    so the replica itself must tell clients to go (frame, then 1001) well before
    Serve's grace period would cut them."""
    from ray import serve

    from troupe.platform.ingress import build

    env = {k: v for k, v in stack.items() if k != "base_url"}
    serve.run(build(env), name="drain_c", route_prefix="/c")
    someone = await user_factory("user")
    sess, client = await connected(stack["base_url"], someone.token, "/c")
    try:
        started = time.monotonic()
        deleting = asyncio.create_task(asyncio.to_thread(serve.delete, "drain_c"))
        code, frames = await client.closed(wait=15)
        elapsed = time.monotonic() - started
        await deleting
    finally:
        await sess.__aexit__(None, None, None)
    assert code == 1001
    assert frames[-1]["type"] == "connection:status"
    assert frames[-1]["payload"] == {"status": "disconnected", "reason": "server shutting down", "retryIn": 1000}
    # Serve's own grace period is 20 s; the goodbye comes from the drain watcher.
    assert elapsed < 10


async def test_shutdown_hook_closes_every_socket_gracefully(stack):
    """The hub's shutdown hook (run by the app's lifespan) says goodbye and closes with 1001."""
    from troupe.platform.deps import Principal
    from troupe.platform.realtime.connection import Connection
    from troupe.platform.realtime.hub import Hub

    class Socket:
        def __init__(self) -> None:
            self.sent: list[dict] = []
            self.closed_with: int | None = None

        async def send_text(self, text: str) -> None:
            self.sent.append(json.loads(text))

        async def close(self, code: int = 1000, reason: str = "") -> None:
            self.closed_with = code

    hub = Hub()
    sockets = [Socket() for _ in range(3)]
    for ws in sockets:
        user = Principal(id=uuid.uuid4(), email="x@example.com", username="x", role="user",
                         permissions=frozenset(), jti="j", exp=int(time.time()) + 60)
        hub.add(Connection(ws, user, hub, avatar=None))  # type: ignore[arg-type]
    await hub.shutdown()
    for ws in sockets:
        assert ws.closed_with == 1001
        assert ws.sent[-1]["type"] == "connection:status"
        assert ws.sent[-1]["payload"] == {"status": "disconnected", "reason": "server shutting down",
                                          "retryIn": 1000}

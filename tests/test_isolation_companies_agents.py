"""Isolation matrix: tenant A's company and agents, seen by another tenant (B), by a
viewer member and a member of A's company, and by an admin — for every route."""

from __future__ import annotations

import pytest

from tests.utils.ca_helpers import make_agent, make_company
from tests.utils.fixtures import assert_error, assert_ok

DOC_BODY = {"category": "c", "documentation": "d"}


@pytest.fixture
async def world(client, user_factory):
    owner, stranger = await user_factory("user"), await user_factory("user")
    member, watcher, admin = await user_factory("user"), await user_factory("viewer"), await user_factory("admin")
    company = await make_company(client, owner)
    assert_ok(await client.put(f"/api/companies/{company['id']}", headers=owner.headers, json={
        "teamMembers": [{"userId": member.id, "role": "member"}, {"userId": watcher.id, "role": "viewer"}]}))
    agent = await make_agent(client, owner, companyId=company["id"])
    private = await make_agent(client, owner)
    theirs = await make_company(client, stranger)
    return dict(owner=owner, stranger=stranger, member=member, watcher=watcher, admin=admin, company=company,
                agent=agent, private=private, theirs=theirs)


def _status(resp) -> tuple[int, str | None]:
    body = resp.json()
    return resp.status_code, (body.get("error") or {}).get("code")


async def test_company_routes_matrix(client, world):
    cid = world["company"]["id"]
    doc = assert_ok(await client.post(f"/api/companies/{cid}/export", headers=world["owner"].headers))
    routes = [
        ("GET", f"/api/companies/{cid}", None),
        ("GET", f"/api/companies/{cid}/metrics", None),
        ("GET", f"/api/companies/{cid}/logs", None),
        ("GET", f"/api/companies/{cid}/tasks", None),
        ("POST", f"/api/companies/{cid}/export", None),
        ("PUT", f"/api/companies/{cid}", {"description": "changed"}),
        ("POST", f"/api/companies/{cid}/import", {"data": {**doc, "agents": [], "workflows": []}}),
        ("POST", f"/api/companies/{cid}/duplicate", {"name": "copy"}),
    ]
    # expected (status, code) per role; reads are member-scoped, writes owner/admin
    expected = {
        "stranger": [(404, "RES_001")] * 8,
        "watcher": [(200, None)] * 5 + [(403, "AUTH_004")] * 3,  # viewer role: read only
        # duplicate needs update rights on the source: a copy takes everything (issue 10, finding 2)
        "member": [(200, None)] * 5 + [(403, "AUTH_004")] * 3,
        "admin": [(200, None)] * 7 + [(201, None)],
    }
    for role, outcomes in expected.items():
        who = world[role]
        for (method, path, body), want in zip(routes, outcomes, strict=True):
            resp = await client.request(method, path, json=body, headers=who.headers)
            assert _status(resp) == want, (role, method, path, resp.text)
    listed = lambda resp: {c["id"] for c in assert_ok(resp)}  # noqa: E731
    assert cid not in listed(await client.get("/api/companies", params={"limit": 100},
                                              headers=world["stranger"].headers))
    assert cid in listed(await client.get("/api/companies", params={"limit": 100}, headers=world["watcher"].headers))
    assert world["theirs"]["id"] not in listed(await client.get("/api/companies", params={"limit": 100},
                                                                headers=world["owner"].headers))
    # the stranger can't attach their agents to A's company, nor A's agents to theirs
    stranger_agent = await make_agent(client, world["stranger"])
    assert_error(await client.put(f"/api/agents/{stranger_agent['id']}", json={"companyId": cid},
                                  headers=world["stranger"].headers), 404, "RES_001")
    assert_error(await client.post("/api/companies", headers=world["stranger"].headers, json={
        "name": "grab", "type": "other", "industry": "other", "agents": [world["agent"]["id"]]}), 404, "RES_001")
    # delete: the stranger never learns the id exists; the owner may delete what they own
    assert _status(await client.delete(f"/api/companies/{cid}", headers=world["stranger"].headers)) == \
        (404, "RES_001")
    assert _status(await client.delete(f"/api/companies/{cid}", headers=world["watcher"].headers)) == \
        (403, "AUTH_004")
    assert_ok(await client.delete(f"/api/companies/{cid}", headers=world["owner"].headers))
    assert _status(await client.delete(f"/api/companies/{cid}", headers=world["admin"].headers)) == (404, "RES_001")


async def test_agent_routes_matrix(client, world):
    aid, pid = world["agent"]["id"], world["private"]["id"]
    routes = [
        ("GET", f"/api/agents/{aid}", None),
        ("GET", f"/api/agents/{aid}/performance", None),
        ("GET", f"/api/agents/{aid}/reviews", None),
        ("POST", f"/api/agents/{aid}/clone", {"name": "c"}),
        ("POST", f"/api/agents/{aid}/review", {"rating": 4, "comment": "ok"}),
        ("PUT", f"/api/agents/{aid}", {"description": "changed"}),
        ("POST", f"/api/agents/{aid}/publish", DOC_BODY),
        ("POST", f"/api/agents/{aid}/unpublish", None),
        ("DELETE", f"/api/agents/{aid}", None),
    ]
    expected = {
        # invisible: RES_001 (ownership-scoped publish/delete reach the lookup, so they too hide the id)
        "stranger": [(404, "RES_001")] * 9,
        "watcher": [(200, None)] * 3 + [(403, "AUTH_004")] + [(201, None)] + [(403, "AUTH_004")] * 4,
        "member": [(200, None)] * 3 + [(201, None)] * 2 + [(403, "AUTH_004")] * 4,
        "admin": [(200, None)] * 3 + [(201, None)] * 2 + [(200, None)] * 4,
    }
    for role, outcomes in expected.items():
        who = world[role]
        for (method, path, body), want in zip(routes, outcomes, strict=True):
            if role == "admin" and method == "DELETE":
                continue  # checked last
            resp = await client.request(method, path, json=body, headers=who.headers)
            assert _status(resp) == want, (role, method, path, resp.text)
    # an agent outside any company is visible to its creator only (until published)
    for role in ("stranger", "watcher", "member"):
        assert_error(await client.get(f"/api/agents/{pid}", headers=world[role].headers), 404, "RES_001")
        ids = {a["id"] for a in assert_ok(await client.get("/api/agents", params={"limit": 100},
                                                           headers=world[role].headers))}
        assert pid not in ids
        assert (aid in ids) == (role != "stranger")
    assert_ok(await client.get(f"/api/agents/{pid}", headers=world["admin"].headers))
    # published: readable by the stranger, still not writable
    assert_ok(await client.post(f"/api/agents/{pid}/publish", json=DOC_BODY, headers=world["admin"].headers))
    assert_ok(await client.get(f"/api/agents/{pid}", headers=world["stranger"].headers))
    assert_error(await client.put(f"/api/agents/{pid}", json={"name": "x"}, headers=world["stranger"].headers),
                 403, "AUTH_004")
    assert_ok(await client.delete(f"/api/agents/{aid}", headers=world["admin"].headers))

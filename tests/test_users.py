"""The users endpoints: listing, profiles, administration, activity, invitations, admin bootstrap."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from tests.auth_helpers import audit_actions, bearer, fresh_ip, login, mail_token, new_account, register
from tests.utils.fixtures import PASSWORD, assert_error, assert_ok

SENSITIVE = {"password", "passwordHash", "emailVerificationToken", "passwordResetToken", "tokenVersion"}


async def _company(owner_id: str, *, members: dict[str, str] | None = None) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    members = members or {}
    async with session_scope() as session:
        company = models.Company(name=f"Acme {uuid.uuid4().hex[:6]}", type="software", owner_id=uuid.UUID(owner_id),
                                 team_members=[uuid.UUID(m) for m in members], member_roles=members)
        session.add(company)
        await session.flush()
        return str(company.id)


async def _db(model, **where):
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return await session.scalar(select(model).filter_by(**where))


async def test_me_and_get(client, user, other_user, admin):
    me = assert_ok(await client.get("/api/users/me", headers=user.headers))
    assert me["id"] == user.id and me["email"] == user.email and not SENSITIVE & set(me)
    assert me["profile"]["preferences"]["dashboard"]["defaultView"] == "overview"
    assert assert_ok(await client.get(f"/api/users/{user.id}", headers=user.headers))["id"] == user.id
    assert_error(await client.get(f"/api/users/{other_user.id}", headers=user.headers), 403, "AUTH_004")
    assert assert_ok(await client.get(f"/api/users/{other_user.id}", headers=admin.headers))["id"] == other_user.id
    assert_error(await client.get(f"/api/users/{uuid.uuid4()}", headers=admin.headers), 404, "RES_001")
    assert_error(await client.get("/api/users/not-a-uuid", headers=admin.headers), 422, "VAL_003")


async def test_list_search_filter_sort_paginate(client, admin, user, viewer, user_factory):
    assert_error(await client.get("/api/users", headers=user.headers), 403, "AUTH_004")
    assert_error(await client.get("/api/users", headers=viewer.headers), 403, "AUTH_004")
    body = await client.get("/api/users", params={"search": user.username, "limit": 5}, headers=admin.headers)
    data = assert_ok(body)
    assert [u["id"] for u in data] == [user.id]
    assert body.json()["pagination"] == {"page": 1, "limit": 5, "total": 1, "totalPages": 1, "hasNext": False,
                                         "hasPrev": False}
    viewers = assert_ok(await client.get("/api/users", params={"role": "viewer", "limit": 100},
                                         headers=admin.headers))
    assert viewers and all(u["role"] == "viewer" for u in viewers)
    tag = uuid.uuid4().hex[:6]
    made = [await user_factory("user") for _ in range(3)]
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        for i, m in enumerate(made):
            row = await session.get(models.User, uuid.UUID(m.id))
            row.last_name = f"Zed{tag}{i}"
    page1 = await client.get("/api/users", params={"search": f"zed{tag}", "sort": "lastName", "order": "asc",
                                                   "limit": 2}, headers=admin.headers)
    names = [u["lastName"] for u in assert_ok(page1)]
    assert names == [f"Zed{tag}0", f"Zed{tag}1"] and page1.json()["pagination"]["hasNext"] is True
    page2 = assert_ok(await client.get("/api/users", params={"search": f"zed{tag}", "sort": "lastName",
                                                             "order": "asc", "limit": 2, "page": 2},
                                       headers=admin.headers))
    assert [u["lastName"] for u in page2] == [f"Zed{tag}2"]
    # LIKE wildcards in the search are literal.
    assert assert_ok(await client.get("/api/users", params={"search": "%"}, headers=admin.headers)) == []
    assert_error(await client.get("/api/users", params={"sort": "passwordHash"}, headers=admin.headers),
                 422, "VAL_001", field="sort")
    # A limit above 100 is served as 100 (the spec's clients ask for "all"), not refused.
    clamped = await client.get("/api/users", params={"limit": 1000}, headers=admin.headers)
    assert clamped.status_code == 200 and clamped.json()["pagination"]["limit"] == 100
    assert_error(await client.get("/api/users", params={"limit": 0}, headers=admin.headers), 422, "VAL_001")
    assert_error(await client.get("/api/users", params={"status": "zombie"}, headers=admin.headers),
                 422, "VAL_001", field="status")


async def test_update_profile(client, user, other_user, admin, super_admin):
    patch = {"firstName": "Grace", "profile": {"bio": "Compilers", "timezone": "Europe/Paris",
                                               "preferences": {"theme": "dark", "dashboard": {"compactMode": True}}}}
    data = assert_ok(await client.put(f"/api/users/{user.id}", json=patch, headers=user.headers))
    assert data["firstName"] == "Grace" and data["profile"]["bio"] == "Compilers"
    assert data["profile"]["timezone"] == "Europe/Paris"
    prefs = data["profile"]["preferences"]
    assert prefs["theme"] == "dark" and prefs["dashboard"]["compactMode"] is True
    assert prefs["dashboard"]["refreshInterval"] == 30  # untouched defaults survive the merge
    # Second patch keeps the first one's values.
    again = assert_ok(await client.put(f"/api/users/{user.id}",
                                       json={"profile": {"preferences": {"notifications": {"sms": True}}}},
                                       headers=user.headers))
    assert again["profile"]["preferences"]["theme"] == "dark"
    assert again["profile"]["preferences"]["notifications"]["sms"] is True
    # Server-owned values sent changed are refused by name (sent unchanged they are ignored: test_round_trips).
    for forbidden_field in ({"role": "admin"}, {"status": "suspended"}, {"email": "x@example.com"}):
        assert_error(await client.put(f"/api/users/{user.id}", json=forbidden_field, headers=user.headers),
                     422, "VAL_001", field=next(iter(forbidden_field)))
    assert_error(await client.put(f"/api/users/{user.id}", json={"profile": {"timezone": "Mars/Olympus"}},
                                  headers=user.headers), 422, "VAL_001", field="profile.timezone")
    assert_error(await client.put(f"/api/users/{user.id}", json={"firstName": ""}, headers=user.headers),
                 422, "VAL_001", field="firstName")
    assert_error(await client.put(f"/api/users/{other_user.id}", json={"firstName": "Mallory"},
                                  headers=user.headers), 403, "AUTH_004")
    by_admin = assert_ok(await client.put(f"/api/users/{other_user.id}", json={"lastName": "Fixed"},
                                          headers=admin.headers))
    assert by_admin["lastName"] == "Fixed"
    assert_error(await client.put(f"/api/users/{super_admin.id}", json={"lastName": "Nope"},
                                  headers=admin.headers), 403, "AUTH_004")


async def test_role_changes(client, user, other_user, admin, super_admin):
    body = {"role": "admin"}
    assert_error(await client.put(f"/api/users/{other_user.id}/role", json=body, headers=user.headers),
                 403, "AUTH_004")
    # ADMIN has users:read/update but not users:manage: only a super admin grants roles.
    assert_error(await client.put(f"/api/users/{other_user.id}/role", json=body, headers=admin.headers),
                 403, "AUTH_004")
    assert_error(await client.put(f"/api/users/{super_admin.id}/role", json={"role": "user"},
                                  headers=super_admin.headers), 403, "AUTH_004")
    assert_error(await client.put(f"/api/users/{other_user.id}/role", json={"role": "super_admin"},
                                  headers=super_admin.headers), 422, "VAL_001", field="role")
    changed = assert_ok(await client.put(f"/api/users/{other_user.id}/role", json=body, headers=super_admin.headers))
    assert changed["role"] == "admin"
    assert {"id": "users:read", "name": "View users", "resource": "users", "action": "read", "conditions": None,
            "scope": "global"} in changed["permissions"]
    # The live token now acts with the new role.
    assert_ok(await client.get("/api/users", headers=other_user.headers))
    assert "user.role_change" in await audit_actions(other_user.id)
    assert_error(await client.put(f"/api/users/{uuid.uuid4()}/role", json=body, headers=super_admin.headers),
                 404, "RES_001")


async def test_suspension_revokes_live_sessions(client, super_admin):
    account, data = await register(client)
    uid = data["user"]["id"]
    suspended = assert_ok(await client.put(f"/api/users/{uid}/status", json={"status": "suspended",
                                                                            "reason": "abuse"},
                                           headers=super_admin.headers))
    assert suspended["status"] == "suspended"
    assert_error(await client.get("/api/users/me", headers=bearer(data["token"])), 401, "AUTH_001")
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]}),
                 401, "AUTH_002")
    assert_error(await client.post("/api/auth/login", json={"email": account["email"], "password": PASSWORD},
                                   headers=fresh_ip()), 401, "AUTH_001")
    assert_error(await client.put(f"/api/users/{uid}/status", json={"status": "banned"}, headers=super_admin.headers),
                 422, "VAL_001", field="status")
    assert_error(await client.put(f"/api/users/{super_admin.id}/status", json={"status": "inactive"},
                                  headers=super_admin.headers), 403, "AUTH_004")
    assert_ok(await client.put(f"/api/users/{uid}/status", json={"status": "active"}, headers=super_admin.headers))
    relogged = await login(client, account["email"])
    # Reactivation does not revive the tokens issued before the suspension.
    assert_error(await client.get("/api/users/me", headers=bearer(data["token"])), 401, "AUTH_002")
    assert_ok(await client.get("/api/users/me", headers=bearer(relogged["token"])))
    actions = await audit_actions(uid)
    assert actions.count("user.status_change") == 2


async def test_soft_delete(client, admin, super_admin):
    from troupe.db import models

    account, data = await register(client)
    uid = data["user"]["id"]
    assert_error(await client.delete(f"/api/users/{uid}", headers=admin.headers), 403, "AUTH_004")
    assert_error(await client.delete(f"/api/users/{super_admin.id}", headers=super_admin.headers), 403, "AUTH_004")
    assert assert_ok(await client.delete(f"/api/users/{uid}", headers=super_admin.headers)) == {
        "message": "User deleted"}  # like every other DELETE
    row = await _db(models.User, id=uuid.UUID(uid))
    assert row is not None and row.deleted_at is not None  # the row stays
    assert_error(await client.get("/api/users/me", headers=bearer(data["token"])), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]}),
                 401, "AUTH_002")
    assert_error(await client.post("/api/auth/login", json={"email": account["email"], "password": PASSWORD},
                                   headers=fresh_ip()), 401, "AUTH_006")
    assert_error(await client.get(f"/api/users/{uid}", headers=super_admin.headers), 404, "RES_001")
    assert_error(await client.delete(f"/api/users/{uid}", headers=super_admin.headers), 404, "RES_001")
    listed = assert_ok(await client.get("/api/users", params={"search": account["username"]},
                                        headers=super_admin.headers))
    assert listed == []


async def test_activity(client, admin, other_user):
    account, data = await register(client)
    uid = data["user"]["id"]
    await login(client, account["email"])
    await client.post("/api/auth/login", json={"email": account["email"], "password": "Wrong!Passw0rd"},
                      headers=fresh_ip())
    response = await client.get(f"/api/users/{uid}/activity", params={"limit": 2},
                                headers=bearer(data["token"]))
    entries = assert_ok(response)
    assert [e["action"] for e in entries] == ["login.failed", "login.success"]  # newest first
    assert response.json()["pagination"]["total"] >= 3 and response.json()["pagination"]["hasNext"] is True
    assert entries[0]["source"] == "audit" and entries[0]["details"]["ip"]
    assert_error(await client.get(f"/api/users/{uid}/activity", headers=other_user.headers), 403, "AUTH_004")
    assert assert_ok(await client.get(f"/api/users/{uid}/activity", params={"source": "audit"},
                                      headers=admin.headers))
    assert_error(await client.get(f"/api/users/{uuid.uuid4()}/activity", headers=admin.headers), 404, "RES_001")


async def test_invite_and_accept(client, user, other_user, user_factory, admin):
    from troupe.db import models

    company_id = await _company(user.id)
    body = {"companyId": company_id, "role": "viewer", "message": "Join us"}
    # A stranger cannot see the company; a member can see it but not invite.
    assert_error(await client.post(f"/api/users/{other_user.id}/invite", json=body, headers=other_user.headers),
                 404, "RES_001")
    member = await user_factory("user")
    member_company = await _company(user.id, members={member.id: "member"})
    assert_error(await client.post(f"/api/users/{other_user.id}/invite",
                                   json={**body, "companyId": member_company}, headers=member.headers),
                 403, "AUTH_004")
    assert_error(await client.post(f"/api/users/{other_user.id}/invite", json={**body, "role": "owner"},
                                   headers=user.headers), 422, "VAL_001", field="role")
    assert_error(await client.post(f"/api/users/{uuid.uuid4()}/invite", json=body, headers=user.headers),
                 404, "RES_001")
    invitation = assert_ok(await client.post(f"/api/users/{other_user.id}/invite", json=body, headers=user.headers),
                           201)
    assert invitation["status"] == "pending" and invitation["role"] == "viewer"
    assert invitation["userId"] == other_user.id and "token" not in invitation
    token = mail_token(other_user.email, "Invitation token")
    # Only the invitee can use it.
    assert_error(await client.post("/api/users/invitations/accept", json={"token": token}, headers=member.headers),
                 404, "RES_001")
    joined = assert_ok(await client.post("/api/users/invitations/accept", json={"token": token},
                                         headers=other_user.headers))
    assert joined == {"companyId": company_id, "role": "viewer"}
    company = await _db(models.Company, id=uuid.UUID(company_id))
    assert uuid.UUID(other_user.id) in company.team_members
    assert company.member_roles[other_user.id] == "viewer"
    me = assert_ok(await client.get("/api/users/me", headers=other_user.headers))
    assert company_id in me["companies"]
    assert_error(await client.post("/api/users/invitations/accept", json={"token": token},
                                   headers=other_user.headers), 410, "RES_006")
    assert_error(await client.post(f"/api/users/{other_user.id}/invite", json=body, headers=user.headers),
                 409, "RES_002")
    # companies:manage (ADMIN) may invite into any company.
    third = await user_factory("user")
    assert assert_ok(await client.post(f"/api/users/{third.id}/invite", json={"companyId": company_id},
                                       headers=admin.headers), 201)["role"] == "member"
    # The spec's role names: 'user' means member; 'admin' is no company role.
    fourth = await user_factory("user")
    assert assert_ok(await client.post(f"/api/users/{fourth.id}/invite", json={"companyId": company_id, "role": "user"},
                                       headers=user.headers), 201)["role"] == "member"
    assert_error(await client.post(f"/api/users/{fourth.id}/invite", json={**body, "role": "admin"},
                                   headers=user.headers), 422, "VAL_001", field="role")
    assert "invitation.accept" in await audit_actions(other_user.id)
    assert "invitation.create" in await audit_actions(third.id)


async def test_register_with_invite_code(client, user):
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import token_hash
    from troupe.timeutil import utcnow

    company_id = await _company(user.id)
    account = new_account()
    code = f"invite-{uuid.uuid4().hex}"
    async with session_scope() as session:
        session.add(models.Invitation(company_id=uuid.UUID(company_id), email=account["email"], role="member",
                                      token_hash=token_hash(code), invited_by=uuid.UUID(user.id), status="pending",
                                      expires_at=utcnow().replace(year=utcnow().year + 1)))
    # A wrong code refuses the registration as a whole: no account is left behind.
    wrong = {**account, "inviteCode": "invite-wrong-code"}
    assert_error(await client.post("/api/auth/register", json=wrong, headers=fresh_ip()), 404, "RES_001",
                 field="inviteCode")
    assert await _db(models.User, email=account["email"]) is None
    _, data = await register(client, **{k: v for k, v in account.items()}, inviteCode=code)
    assert data["membership"] == {"companyId": company_id, "role": "member"}
    assert data["user"]["emailVerified"] is True and company_id in data["user"]["companies"]


async def test_ensure_admin_is_idempotent_and_promotes(client, user):
    from troupe.db import models
    from troupe.platform.users.service import ensure_admin, promote_admin

    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    assert "created" in await ensure_admin(email=email, password="Adm1n!Password")
    assert "already" in await ensure_admin(email=email, password="Adm1n!Password")
    row = await _db(models.User, email=email)
    assert row.role == "super_admin" and row.status == "active"
    data = await login(client, email, "Adm1n!Password")
    assert data["user"]["role"] == "super_admin"
    assert {p["id"]: p["scope"] for p in data["user"]["permissions"]}["users:manage"] == "global"
    assert "promoted" in await ensure_admin(email=user.email, password="Ignored!Passw0rd")
    assert (await _db(models.User, email=user.email)).role == "super_admin"
    other = await register(client)
    assert "promoted" in await promote_admin(email=other[0]["email"])

"""The stored system settings take effect, through Serve over HTTP.

The server and database are shared by the whole session: every test that
changes a setting restores it in ``finally`` and keeps its window short."""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager

from tests.auth_helpers import audit_actions, fresh_ip, new_account
from tests.utils.fixtures import PASSWORD, assert_error, assert_ok
from troupe.infra.mail import read_outbox


@asynccontextmanager
async def settings(client, super_admin, **sections):
    """Apply ``sections`` (PUT /api/settings), then put back the values they replaced."""
    before = assert_ok(await client.get("/api/settings", headers=super_admin.headers))
    restore = {name: {key: before[name][key] for key in values} for name, values in sections.items()}
    assert_ok(await client.put("/api/settings", headers=super_admin.headers, json=sections))
    try:
        yield
    finally:
        assert_ok(await client.put("/api/settings", headers=super_admin.headers, json=restore))


def company_body(**extra) -> dict:
    return {"name": f"fx-{uuid.uuid4().hex[:6]}", "type": "software", "industry": "technology", **extra}


async def test_maintenance_blocks_writes_of_non_admins(client, user, admin, super_admin):
    async with settings(client, super_admin, maintenance={"enabled": True, "message": "Back at 22:00"}):
        error = assert_error(await client.post("/api/companies", json=company_body(), headers=user.headers),
                             503, "BIZ_008")
        assert error["message"] == "Back at 22:00"
        assert_error(await client.post("/api/companies", json=company_body()), 503, "BIZ_008")  # anonymous
        assert_ok(await client.get("/api/companies", headers=user.headers))  # reads keep working
        assert_ok(await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD},
                                    headers=fresh_ip()))
        assert_ok(await client.get("/api/settings/health"))
        assert_ok(await client.post("/api/companies", json=company_body(), headers=admin.headers), 201)
    assert_ok(await client.post("/api/companies", json=company_body(), headers=user.headers), 201)


async def test_feature_switches(client, user, other_user, admin, super_admin):
    async with settings(client, super_admin, features={"marketplaceEnabled": False}):
        error = assert_error(await client.get("/api/tools/marketplace", headers=user.headers), 403, "BIZ_007")
        assert error["details"] == {"feature": "marketplace"}
    assert_ok(await client.get("/api/tools/marketplace", headers=user.headers))

    async with settings(client, super_admin, features={"analyticsEnabled": False}):
        assert_error(await client.get("/api/dashboard/stats", headers=user.headers), 403, "BIZ_007")
        assert_error(await client.get("/api/metrics/system", headers=admin.headers), 403, "BIZ_007")
    assert_ok(await client.get("/api/dashboard/stats", headers=user.headers))

    company = assert_ok(await client.post("/api/companies", json=company_body(), headers=user.headers), 201)
    invite = {"companyId": company["id"], "role": "member"}
    async with settings(client, super_admin, features={"collaborationEnabled": False}):
        assert_error(await client.post(f"/api/users/{other_user.id}/invite", json=invite, headers=user.headers),
                     403, "BIZ_007")
        assert_error(await client.post("/api/users/invitations/accept", json={"token": "x" * 20},
                                       headers=other_user.headers), 403, "BIZ_007")
    assert_ok(await client.post(f"/api/users/{other_user.id}/invite", json=invite, headers=user.headers), 201)


async def test_audit_log_switch(client, user_factory, super_admin):
    account = await user_factory("user")
    async with settings(client, super_admin, features={"auditLogEnabled": False}):
        assert_ok(await client.post("/api/auth/login", json={"email": account.email, "password": account.password},
                                    headers=fresh_ip()))
    assert "login.success" not in await audit_actions(account.id)
    assert_ok(await client.post("/api/auth/login", json={"email": account.email, "password": account.password},
                                headers=fresh_ip()))
    assert "login.success" in await audit_actions(account.id)


async def test_rate_limits_come_from_settings(client, user, super_admin):
    ip = fresh_ip()
    async with settings(client, super_admin, rateLimits={"maxRequests": 3, "windowMs": 60_000}):
        for _ in range(3):
            resp = await client.get("/api/companies", headers={**user.headers, **ip})
            assert resp.status_code == 200 and resp.headers["x-ratelimit-limit"] == "3"
        error = assert_error(await client.get("/api/companies", headers={**user.headers, **ip}), 429, "SYS_004")
        assert error["details"]["limit"] == 3
        # /api/settings itself is never limited: the limit can always be raised again.
        assert_ok(await client.get("/api/settings", headers={**super_admin.headers, **ip}))


async def test_login_lockout_from_settings(client, user_factory, super_admin):
    account = await user_factory("user")
    wrong = {"email": account.email, "password": "Wr0ng!Password"}
    async with settings(client, super_admin, security={"maxLoginAttempts": 2, "lockoutDuration": 1}):
        assert_error(await client.post("/api/auth/login", json=wrong, headers=fresh_ip()), 401, "AUTH_006")
        error = assert_error(await client.post("/api/auth/login", json=wrong, headers=fresh_ip()), 423, "AUTH_005")
        assert 0 < error["details"]["retryAfter"] <= 60


async def test_password_policy_and_session_timeout(client, super_admin):
    long_policy = {"passwordPolicy": {"minLength": 20}}
    async with settings(client, super_admin, security=long_policy):
        error = assert_error(await client.post("/api/auth/register", json=new_account(), headers=fresh_ip()),
                             422, "VAL_005")
        assert "at least 20 characters" in error["details"]["missing"]
    relaxed = {"passwordPolicy": {"requireSymbols": False, "requireUppercase": False}, "sessionTimeout": 5}
    async with settings(client, super_admin, security=relaxed):
        data = assert_ok(await client.post("/api/auth/register", json=new_account(password="plainpassw0rd"),
                                           headers=fresh_ip()), 201)
        assert data["expiresIn"] == 300
    assert_error(await client.post("/api/auth/register", json=new_account(password="plainpassw0rd"),
                                   headers=fresh_ip()), 422, "VAL_005")


async def test_limits_cap_company_settings_and_team(client, user, other_user, viewer, super_admin):
    async with settings(client, super_admin, limits={"maxAgentsPerCompany": 5, "maxUsersPerCompany": 2}):
        resp = await client.post("/api/companies", json=company_body(settings={"maxAgents": 6}),
                                 headers=user.headers)
        error = assert_error(resp, 422, "VAL_001", field="settings.maxAgents")
        assert error["details"]["limit"] == 5
        company = assert_ok(await client.post("/api/companies", json=company_body(), headers=user.headers), 201)
        assert company["settings"]["maxAgents"] == 5  # the default (10) lowered to the cap
        patch = {"teamMembers": [{"userId": other_user.id, "role": "member"},
                                 {"userId": viewer.id, "role": "viewer"}]}
        assert_error(await client.put(f"/api/companies/{company['id']}", json=patch, headers=user.headers),
                     409, "RES_004")
        one = {"teamMembers": [{"userId": other_user.id, "role": "member"}]}
        assert_ok(await client.put(f"/api/companies/{company['id']}", json=one, headers=user.headers))


async def test_storage_quota_from_settings(client, user, super_admin):
    async with settings(client, super_admin, limits={"maxStoragePerUser": 4096, "maxFileSize": 2048}):
        usage = assert_ok(await client.get("/api/files/storage/usage", headers=user.headers))
        assert usage["totalLimit"] == 4096
        resp = await client.post("/api/files/upload", headers=user.headers,
                                 files={"file": ("big.txt", b"a" * 3000, "text/plain")})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "VAL_008", resp.text


async def test_general_settings_brand_mail(client, user_factory, super_admin):
    account = await user_factory("user")
    general = {"siteName": "Acme Agents", "supportEmail": "help@acme.example", "siteUrl": "https://agents.acme.example"}
    async with settings(client, super_admin, general=general):
        assert_ok(await client.post("/api/auth/forgot-password", json={"email": account.email},
                                    headers=fresh_ip()))
    message = read_outbox(account.email)[-1]
    assert message["from"].startswith("Acme Agents <")
    assert "Support: help@acme.example" in message["body"]
    assert re.search(r"https://agents\.acme\.example/reset-password\?token=\S+", message["body"])


async def test_general_time_zone_language_and_admin_email(client, super_admin):
    """The spec's general.timezone/language start every new account's profile; general.adminEmail is
    mailed when health finds a service down."""
    import asyncio
    import os

    from tests.auth_helpers import register
    from troupe.infra.redis import get_redis, rkey
    from troupe.infra.storage import get_storage

    admin_email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    general = {"timezone": "Europe/Paris", "language": "fr", "adminEmail": admin_email}
    async with settings(client, super_admin, general=general):
        shown = assert_ok(await client.get("/api/settings", headers=super_admin.headers))["general"]
        assert {k: shown[k] for k in general} == general
        _, data = await register(client)
        assert data["user"]["profile"]["timezone"] == "Europe/Paris" and data["user"]["profile"]["language"] == "fr"

        # Storage down (a file where its directory should be): degraded, and the administrator is told.
        await get_redis().delete(rkey("alerts", "once", "down:storage"))
        root = get_storage().root
        os.makedirs(root, exist_ok=True)
        os.rename(root, f"{root}.aside")
        os.close(os.open(root, os.O_CREAT | os.O_WRONLY))
        try:
            assert assert_ok(await client.get("/api/settings/health"))["status"] == "degraded"
            for _ in range(50):  # the alert and its mail go out in the background
                mails = [m for m in read_outbox(admin_email) if m["subject"] == "storage is down"]
                if mails:
                    break
                await asyncio.sleep(0.2)
        finally:
            os.remove(root)
            os.rename(f"{root}.aside", root)
        assert mails and "health check of storage failed" in mails[0]["body"]
    _, later = await register(client)
    assert later["user"]["profile"]["timezone"] == "UTC"  # the setting was put back


async def test_spec_settings_nothing_honours_are_refused_by_name(client, super_admin):
    """Stored, they would do nothing: each is refused naming the field and why, and nothing is written."""
    before = assert_ok(await client.get("/api/settings", headers=super_admin.headers))
    for body, field in (({"integrations": {"openai": {"enabled": True, "apiKey": "sk-x", "settings": {}}}},
                         "integrations"),
                        ({"security": {"mfaRequired": False}}, "security.mfaRequired"),
                        ({"security": {"ipWhitelist": []}}, "security.ipWhitelist"),
                        ({"security": {"passwordPolicy": {"maxAge": 90}}}, "security.passwordPolicy.maxAge"),
                        ({"notifications": {"smsEnabled": False}}, "notifications.smsEnabled"),
                        ({"notifications": {"pushEnabled": True}}, "notifications.pushEnabled"),
                        ({"notifications": {"slackEnabled": True}}, "notifications.slackEnabled"),
                        ({"notifications": {"templates": []}}, "notifications.templates"),
                        ({"general": {"siteName": "Changed", "timezone": "Mars/Olympus"}}, "general.timezone")):
        error = assert_error(await client.put("/api/settings", headers=super_admin.headers, json=body),
                             422, "VAL_001", field=field)
        if field != "general.timezone":
            assert "not supported" in error["message"], error
    assert assert_ok(await client.get("/api/settings", headers=super_admin.headers)) == before

"""The 8 auth endpoints, their bad inputs, token revocation, lockout and rate limits."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import jwt
from sqlalchemy import select, update

from tests.auth_helpers import (
    audit_actions,
    bearer,
    fill_window,
    fresh_ip,
    login,
    mail_token,
    new_account,
    register,
)
from tests.utils.fixtures import PASSWORD, assert_error, assert_ok

SENSITIVE = {"password", "passwordHash", "emailVerificationToken", "passwordResetToken", "tokenVersion",
             "loginAttempts", "lockedUntil"}


async def _db_user(email: str):
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return await session.scalar(select(models.User).where(models.User.email == email))


async def _db_update_user(email: str, **values) -> None:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        await session.execute(update(models.User).where(models.User.email == email).values(**values))


# --------------------------------------------------------------------------- register


async def test_register_returns_user_and_working_tokens(client):
    body, data = await register(client)
    user = data["user"]
    assert user["email"] == body["email"] and user["username"] == body["username"]
    assert user["role"] == "user" and user["status"] == "active" and user["emailVerified"] is False
    assert user["companies"] == []
    # The spec's Permission objects, from the role table; the JWT keeps the strings.
    permissions = {p["id"]: p for p in user["permissions"]}
    assert permissions["companies:create"] == {"id": "companies:create", "name": "Create companies",
                                               "resource": "companies", "action": "create",
                                               "conditions": None, "scope": "company"}
    # Owner-scoped rights of the USER role: only on what they own or created.
    assert permissions["companies:delete"]["scope"] == "own" and permissions["tasks:cancel"]["action"] == "cancel"
    assert "users:read" not in permissions
    assert user["profile"]["timezone"] == "UTC" and user["profile"]["preferences"]["theme"] == "auto"
    assert not SENSITIVE & set(user)
    assert data["expiresIn"] > 0 and data["refreshToken"]
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert {"sub", "email", "username", "role", "permissions", "companies", "iat", "exp", "jti"} <= set(claims)
    assert "companies:create" in claims["permissions"] and "companies:delete" not in claims["permissions"]
    me = assert_ok(await client.get("/api/users/me", headers=bearer(data["token"])))
    assert me["id"] == user["id"]
    assert mail_token(body["email"], "Verification token")
    assert "user.register" in await audit_actions(user["id"])


async def test_register_cannot_choose_a_role(client):
    error = assert_error(await client.post("/api/auth/register", json=new_account(role="super_admin"),
                                           headers=fresh_ip()), 422, "VAL_001")
    assert error["field"] == "role"


async def test_register_weak_passwords_are_refused(client):
    for weak in ("short1!A", "alllowercase1!", "ALLUPPERCASE1!", "NoDigits!!abc", "NoSymbols123abc",
                 "Aa1!" + "x" * 80):
        body = new_account(password=weak)
        response = await client.post("/api/auth/register", json=body, headers=fresh_ip())
        if weak == "short1!A":  # exactly 8 characters with every class: acceptable
            assert_ok(response, 201)
            continue
        assert_error(response, 422, "VAL_005", field="password")
    containing_username = new_account()
    containing_username["password"] = containing_username["username"].upper() + "a1!"
    assert_error(await client.post("/api/auth/register", json=containing_username, headers=fresh_ip()),
                 422, "VAL_005", field="password")


async def test_register_duplicates_are_val_006(client):
    body, _ = await register(client)
    dup_email = new_account(email=body["email"].upper())
    assert_error(await client.post("/api/auth/register", json=dup_email, headers=fresh_ip()), 409, "VAL_006",
                 field="email")
    dup_name = new_account(username=body["username"].upper())
    assert_error(await client.post("/api/auth/register", json=dup_name, headers=fresh_ip()), 409, "VAL_006",
                 field="username")


async def test_register_bad_inputs(client):
    assert_error(await client.post("/api/auth/register", json=new_account(email="not-an-email"),
                                   headers=fresh_ip()), 422, "VAL_004", field="email")
    missing = new_account()
    del missing["password"]
    assert_error(await client.post("/api/auth/register", json=missing, headers=fresh_ip()), 422, "VAL_002",
                 field="password")
    malformed = await client.post("/api/auth/register", content=b'{"email": "x@example.com",',
                                  headers={"content-type": "application/json", **fresh_ip()})
    assert_error(malformed, 422, "VAL_003")
    huge = await client.post("/api/auth/register", content=b'{"email": "' + b"a" * 300_000 + b'"}',
                             headers={"content-type": "application/json", **fresh_ip()})
    assert_error(huge, 413, "VAL_008")
    assert_error(await client.post("/api/auth/register", json=new_account(username="no spaces allowed"),
                                   headers=fresh_ip()), 422, "VAL_001", field="username")


# --------------------------------------------------------------------------- login


async def test_login_success_and_identical_failures(client):
    body, _ = await register(client)
    data = await login(client, body["email"].upper(), rememberMe=True, deviceInfo="pytest")
    assert data["user"]["lastLoginAt"] and data["token"] and data["refreshToken"]
    wrong = await client.post("/api/auth/login", json={"email": body["email"], "password": "Wrong!Passw0rd"},
                              headers=fresh_ip())
    unknown = await client.post("/api/auth/login", json={"email": f"nobody-{uuid.uuid4().hex}@example.com",
                                                         "password": "Wrong!Passw0rd"}, headers=fresh_ip())
    e1, e2 = assert_error(wrong, 401, "AUTH_006"), assert_error(unknown, 401, "AUTH_006")
    assert (e1["message"], e1["details"], e1["field"]) == (e2["message"], e2["details"], e2["field"])
    actions = await audit_actions(data["user"]["id"])
    assert "login.success" in actions and "login.failed" in actions
    assert_error(await client.post("/api/auth/login", json={"email": body["email"]}, headers=fresh_ip()),
                 422, "VAL_002", field="password")


async def test_lockout_after_repeated_failures(client):
    body, _ = await register(client)
    bad = {"email": body["email"], "password": "Wrong!Passw0rd"}
    for _ in range(4):
        assert_error(await client.post("/api/auth/login", json=bad, headers=fresh_ip()), 401, "AUTH_006")
    locked = await client.post("/api/auth/login", json=bad, headers=fresh_ip())
    assert_error(locked, 423, "AUTH_005")
    assert int(locked.headers["retry-after"]) > 0
    # Even the right password is refused while locked.
    assert_error(await client.post("/api/auth/login", json={"email": body["email"], "password": PASSWORD},
                                   headers=fresh_ip()), 423, "AUTH_005")
    stored = await _db_user(body["email"])
    assert stored.locked_until is not None
    # When the cool-down has passed, the right password works and the counter is reset.
    await _db_update_user(body["email"], locked_until=stored.locked_until.replace(year=2000))
    await login(client, body["email"])
    assert (await _db_user(body["email"])).login_attempts == 0
    assert "login.lockout" in await audit_actions(str(stored.id))


async def test_login_rate_limited_per_ip_and_per_account(client):
    from troupe.config import get_settings
    from troupe.platform.auth.service import account_key, ip_key

    settings = get_settings()
    ip = fresh_ip()
    await fill_window(ip_key("login", ip["X-Forwarded-For"]), settings.auth_rate_limit_per_ip)
    response = await client.post("/api/auth/login", json={"email": "someone@example.com", "password": "x"},
                                 headers=ip)
    assert_error(response, 429, "SYS_004")
    assert int(response.headers["retry-after"]) >= 1

    body, _ = await register(client)
    await fill_window(account_key("login", body["email"]), settings.auth_rate_limit_per_account)
    limited = await client.post("/api/auth/login", json={"email": body["email"], "password": PASSWORD},
                                headers=fresh_ip())
    assert_error(limited, 429, "SYS_004")
    assert int(limited.headers["retry-after"]) >= 1

    # Register shares the rule: a burst from one address is cut off.
    reg_ip = fresh_ip()
    await fill_window(ip_key("register", reg_ip["X-Forwarded-For"]), settings.auth_rate_limit_per_ip)
    assert_error(await client.post("/api/auth/register", json=new_account(), headers=reg_ip), 429, "SYS_004")


async def test_general_api_rate_limit(client):
    from troupe.config import get_settings
    from troupe.platform.ratelimit import api_key

    ip = fresh_ip()
    first = await client.get("/api/users/me", headers=ip)
    assert_error(first, 401, "AUTH_001")
    assert int(first.headers["x-ratelimit-limit"]) == get_settings().rate_limit_max_requests
    await fill_window(api_key(ip["X-Forwarded-For"]), get_settings().rate_limit_max_requests)
    limited = await client.get("/api/users/me", headers=ip)
    assert_error(limited, 429, "SYS_004")
    assert int(limited.headers["retry-after"]) >= 1
    # Health stays reachable for probes.
    assert (await client.get("/api/settings/health", headers=ip)).status_code == 200


# --------------------------------------------------------------------------- access tokens


async def test_bad_access_tokens_are_refused(client, user):
    from troupe.config import get_settings

    assert_error(await client.get("/api/users/me"), 401, "AUTH_001")
    header, payload, signature = user.token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert_error(await client.get("/api/users/me", headers=bearer(tampered)), 401, "AUTH_002")
    claims = jwt.decode(user.token, options={"verify_signature": False})
    none_token = jwt.encode({**claims, "role": "super_admin"}, key=None, algorithm="none")
    assert_error(await client.get("/api/users/me", headers=bearer(none_token)), 401, "AUTH_002")
    secret = get_settings().resolved_jwt_secret()
    expired = jwt.encode({**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, secret,
                         algorithm="HS256")
    assert_error(await client.get("/api/users/me", headers=bearer(expired)), 401, "AUTH_003")
    forged = jwt.encode({**claims, "role": "super_admin"}, "not-the-secret-" * 4, algorithm="HS256")
    assert_error(await client.get("/api/users/me", headers=bearer(forged)), 401, "AUTH_002")
    assert_error(await client.get("/api/users/me", headers={"Authorization": "Basic abc"}), 401, "AUTH_001")


# --------------------------------------------------------------------------- refresh and logout


async def test_refresh_rotates_and_reuse_revokes_the_family(client):
    body, data = await register(client)
    first = data["refreshToken"]
    pair = assert_ok(await client.post("/api/auth/refresh", json={"refreshToken": first}))
    assert pair["refreshToken"] != first and pair["token"]
    assert_ok(await client.get("/api/users/me", headers=bearer(pair["token"])))
    second = assert_ok(await client.post("/api/auth/refresh", json={"refreshToken": pair["refreshToken"]}))
    # Replaying the first (rotated) token revokes the whole family, including the newest one.
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": first}), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]}),
                 401, "AUTH_002")
    assert "refresh.reuse" in await audit_actions(data["user"]["id"])
    # Another login is a separate family and still works.
    other = await login(client, body["email"])
    assert_ok(await client.post("/api/auth/refresh", json={"refreshToken": other["refreshToken"]}))


async def test_refresh_bad_inputs(client):
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": "nope"}), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/refresh", json={}), 422, "VAL_002", field="refreshToken")
    _, data = await register(client)
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import token_hash

    async with session_scope() as session:
        await session.execute(update(models.RefreshToken)
                              .where(models.RefreshToken.token == token_hash(data["refreshToken"]))
                              .values(expires_at=datetime(2000, 1, 1)))
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]}),
                 401, "AUTH_003")


async def test_logout_revokes_access_and_refresh_token(client):
    body, data = await register(client)
    other = await login(client, body["email"])
    assert_ok(await client.post("/api/auth/logout", json={"refreshToken": data["refreshToken"]},
                                headers=bearer(data["token"])))
    assert_error(await client.get("/api/users/me", headers=bearer(data["token"])), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]}),
                 401, "AUTH_002")
    # The other device is untouched.
    assert_ok(await client.get("/api/users/me", headers=bearer(other["token"])))
    assert "logout" in await audit_actions(data["user"]["id"])
    # No body at all is fine too.
    assert_ok(await client.post("/api/auth/logout", headers=bearer(other["token"])))
    assert_error(await client.get("/api/users/me", headers=bearer(other["token"])), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/logout"), 401, "AUTH_001")


async def test_logout_all_devices(client):
    body, data = await register(client)
    other = await login(client, body["email"])
    assert_ok(await client.post("/api/auth/logout", json={"allDevices": True}, headers=bearer(data["token"])))
    for session in (data, other):
        assert_error(await client.get("/api/users/me", headers=bearer(session["token"])), 401, "AUTH_002")
        assert_error(await client.post("/api/auth/refresh", json={"refreshToken": session["refreshToken"]}),
                     401, "AUTH_002")
    assert_error(await client.post("/api/auth/logout", json={"allDevices": "yes please"},
                                   headers=bearer((await login(client, body["email"]))["token"])), 422, "VAL_003")


# --------------------------------------------------------------------------- passwords


async def test_forgot_and_reset_password(client):
    body, data = await register(client)
    unknown = assert_ok(await client.post("/api/auth/forgot-password",
                                          json={"email": f"ghost-{uuid.uuid4().hex}@example.com"},
                                          headers=fresh_ip()))
    known = assert_ok(await client.post("/api/auth/forgot-password", json={"email": body["email"]},
                                        headers=fresh_ip()))
    assert unknown == known
    token = mail_token(body["email"], "Reset token")
    assert (await _db_user(body["email"])).password_reset_token != token  # stored hashed
    assert_error(await client.post("/api/auth/reset-password", json={"token": token, "password": "weak"}),
                 422, "VAL_005", field="password")
    new_password = "An0ther!Secret"
    assert_ok(await client.post("/api/auth/reset-password", json={"token": token, "password": new_password}))
    assert_error(await client.post("/api/auth/reset-password", json={"token": token, "password": new_password}),
                 401, "AUTH_002", field="token")
    # Old sessions are gone; the old password no longer works; the new one does.
    assert_error(await client.get("/api/users/me", headers=bearer(data["token"])), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]}),
                 401, "AUTH_002")
    assert_error(await client.post("/api/auth/login", json={"email": body["email"], "password": PASSWORD},
                                   headers=fresh_ip()), 401, "AUTH_006")
    await login(client, body["email"], new_password)
    assert "password.reset" in await audit_actions(data["user"]["id"])


async def test_reset_token_expires(client):
    body, _ = await register(client)
    assert_ok(await client.post("/api/auth/forgot-password", json={"email": body["email"]}, headers=fresh_ip()))
    token = mail_token(body["email"], "Reset token")
    stored = await _db_user(body["email"])
    await _db_update_user(body["email"], password_reset_expires=stored.password_reset_expires.replace(year=2000))
    assert_error(await client.post("/api/auth/reset-password", json={"token": token, "password": "An0ther!Secret"}),
                 410, "RES_006", field="token")
    assert_error(await client.post("/api/auth/forgot-password", json={"email": "bad"}, headers=fresh_ip()),
                 422, "VAL_004", field="email")


async def test_change_password(client):
    body, data = await register(client)
    other = await login(client, body["email"])
    headers = bearer(data["token"])
    assert_error(await client.post("/api/auth/change-password", headers=headers,
                                   json={"currentPassword": "Wrong!Passw0rd", "newPassword": "An0ther!Secret"}),
                 401, "AUTH_006", field="currentPassword")
    assert_error(await client.post("/api/auth/change-password", headers=headers,
                                   json={"currentPassword": PASSWORD, "newPassword": "weakweak"}),
                 422, "VAL_005", field="newPassword")
    assert_error(await client.post("/api/auth/change-password", headers=headers,
                                   json={"currentPassword": PASSWORD, "newPassword": PASSWORD}),
                 422, "VAL_005", field="newPassword")
    fresh = assert_ok(await client.post("/api/auth/change-password", headers=headers,
                                        json={"currentPassword": PASSWORD, "newPassword": "An0ther!Secret"}))
    assert_ok(await client.get("/api/users/me", headers=bearer(fresh["token"])))
    for old in (data, other):
        assert_error(await client.get("/api/users/me", headers=bearer(old["token"])), 401, "AUTH_002")
        assert_error(await client.post("/api/auth/refresh", json={"refreshToken": old["refreshToken"]}),
                     401, "AUTH_002")
    await login(client, body["email"], "An0ther!Secret")
    assert_error(await client.post("/api/auth/change-password", json={"currentPassword": "a", "newPassword": "b"}),
                 401, "AUTH_001")
    assert "password.change" in await audit_actions(data["user"]["id"])


async def test_verify_email(client):
    body, data = await register(client)
    token = mail_token(body["email"], "Verification token")
    assert_error(await client.post("/api/auth/verify-email", json={"token": "123.bogus"}), 401, "AUTH_002")
    assert_error(await client.post("/api/auth/verify-email", json={"token": "bogus"}), 401, "AUTH_002")
    result = assert_ok(await client.post("/api/auth/verify-email", json={"token": token}))
    assert result["emailVerified"] is True
    me = assert_ok(await client.get("/api/users/me", headers=bearer(data["token"])))
    assert me["emailVerified"] is True
    assert_error(await client.post("/api/auth/verify-email", json={"token": token}), 401, "AUTH_002")


async def test_verify_email_token_expires(client):
    from troupe.security import token_hash

    body, _ = await register(client)
    expired = f"{int(time.time()) - 10}.expired-token-value"
    await _db_update_user(body["email"], email_verification_token=token_hash(expired))
    assert_error(await client.post("/api/auth/verify-email", json={"token": expired}), 410, "RES_006")


async def test_mail_outbox_cli_reads_messages(client, capsys):
    from troupe.__main__ import main

    body, _ = await register(client)
    main(["outbox", "--to", body["email"], "--last", "1"])
    out = capsys.readouterr().out
    assert body["email"] in out and "Verification token:" in out

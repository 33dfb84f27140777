"""Registration, login, token refresh and revocation, password reset and change,
email verification, and the per-IP / per-account limits on them.

Failed attempts must leave a trace even though the request fails, so those
paths commit their bookkeeping (attempt counter, audit row, family revocation)
before raising."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import bcrypt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.config import get_settings
from troupe.db import models
from troupe.errors import AppError, ErrorCode, invalid
from troupe.infra.mail import mail_link_base, send_mail
from troupe.infra.ratelimit import hit
from troupe.platform.auth import sessions
from troupe.platform.auth.audit import audit
from troupe.platform.auth.passwords import check_strength, normalize_email
from troupe.platform.auth.schemas import (
    AuthResult,
    ChangePasswordRequest,
    EmailVerified,
    ForgotPasswordRequest,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    TokenPair,
    VerifyEmailRequest,
)
from troupe.platform.context import current_request
from troupe.platform.deps import Principal
from troupe.platform.schemas import Message
from troupe.platform.users import service as users_service
from troupe.security import hash_password, new_opaque_token, token_hash, verify_password
from troupe.timeutil import iso, utcnow

FORGOT_MESSAGE = "If an account exists for that address, a password reset link has been sent."
_dummy_hash: str | None = None


# --------------------------------------------------------------------------- limits


def ip_key(action: str, ip: str | None) -> str:
    return f"auth:{action}:ip:{ip or 'unknown'}"


def account_key(action: str, account: str) -> str:
    return f"auth:{action}:acct:{account.strip().lower()}"


async def enforce_limits(action: str, *, account: str | None) -> None:
    """Sliding windows per client IP and per account; SYS_004 with Retry-After.

    Fails closed: when Redis does not answer, ``hit`` raises within ``redis_socket_timeout``
    and the request answers 503 SYS_005, because admitting unlimited password guesses while
    the limiter is down is what brute force waits for. (Not under ``fast_path``: since a
    timeout refuses here, a busy moment must not be taken for an outage.)"""
    settings = get_settings()
    window = settings.auth_rate_limit_window.total_seconds()
    checks = [(ip_key(action, current_request().client_ip), settings.auth_rate_limit_per_ip)]
    if account:
        checks.append((account_key(action, account), settings.auth_rate_limit_per_account))
    for key, limit in checks:
        decision = await hit(key, limit=limit, window_seconds=window)
        if not decision.allowed:
            raise AppError(ErrorCode.RATE_LIMIT_EXCEEDED, "Too many attempts; try again later",
                           details={"retryAfter": decision.retry_after_seconds, "limit": limit},
                           headers={"Retry-After": str(decision.retry_after_seconds)})


# --------------------------------------------------------------------------- helpers


async def _equalise_timing(password: str) -> None:
    """Unknown accounts cost one bcrypt check too, so timing does not reveal them."""
    global _dummy_hash
    if _dummy_hash is None:
        rounds = get_settings().bcrypt_rounds
        _dummy_hash = (await asyncio.to_thread(bcrypt.hashpw, b"dummy-password", bcrypt.gensalt(rounds))).decode()
    await verify_password(password, _dummy_hash)


def _expiring_token(lifetime_seconds: float) -> str:
    """``<unix expiry>.<random>``: the expiry travels in the token and is covered by
    the stored hash, so verification tokens need no extra column."""
    return f"{int(time.time() + lifetime_seconds)}.{new_opaque_token()}"


async def _link(path: str, token: str) -> str:
    base = await mail_link_base()
    return f"\nOr open {base}{path}?token={token}\n" if base else ""


async def _send_verification(user: models.User, token: str) -> None:
    await send_mail(to=user.email, subject="Verify your Troupe email address",
                    body=(f"Hello {user.first_name},\n\nConfirm your address with this token:\n\n"
                          f"Verification token: {token}\n\nPOST /api/auth/verify-email {{\"token\": \"<token>\"}}\n"
                          f"{await _link('/verify-email', token)}\nThe token expires in "
                          f"{get_settings().verify_token_expires_in}."),
                    headers={"X-Troupe-Kind": "verify-email"})


async def _result(session: AsyncSession, user: models.User, tokens: sessions.IssuedTokens,
                  membership=None) -> AuthResult:
    return AuthResult(user=await users_service.user_out(session, user), token=tokens.token,
                      refresh_token=tokens.refresh_token, expires_in=tokens.expires_in, membership=membership)


async def _fail(session: AsyncSession, error: AppError) -> AppError:
    """Keep the bookkeeping of a failed attempt, then let the caller raise."""
    await session.commit()
    return error


# --------------------------------------------------------------------------- register / login


async def register(*, session: AsyncSession, data: RegisterRequest) -> AuthResult:
    await enforce_limits("register", account=data.email)
    email = normalize_email(data.email)
    await check_strength(data.password, username=data.username, email=email)
    if await session.scalar(select(models.User.id).where(func.lower(models.User.email) == email)):
        raise invalid("Email is already registered", field="email", code=ErrorCode.DUPLICATE_VALUE)
    if await session.scalar(select(models.User.id)
                            .where(func.lower(models.User.username) == data.username.lower())):
        raise invalid("Username is taken", field="username", code=ErrorCode.DUPLICATE_VALUE)
    verify_token = _expiring_token(get_settings().verify_token_expires_in.total_seconds())
    now = utcnow()
    user = models.User(email=email, username=data.username, password_hash=await hash_password(data.password),
                       first_name=data.first_name, last_name=data.last_name, role="user", status="active",
                       profile=await users_service.new_account_profile(), preferences={}, email_verified=False,
                       email_verification_token=token_hash(verify_token), last_login_at=now,
                       password_changed_at=now)
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # a concurrent registration won the race
        field = "username" if "username" in str(exc.orig) else "email"
        raise invalid(f"{field.title()} is already registered", field=field,
                      code=ErrorCode.DUPLICATE_VALUE) from exc
    membership = None
    if data.invite_code:
        membership = await users_service.accept_invitation(session=session, user_id=user.id, email=email,
                                                           token=data.invite_code, field="inviteCode")
        # The invitation was mailed to this address: that proves it.
        user.email_verified, user.email_verification_token = True, None
    tokens = await sessions.issue_tokens(session, user, ip_address=current_request().client_ip)
    await audit(session, action="user.register", message=f"Account {user.username} registered", user_id=user.id)
    if not user.email_verified:
        await _send_verification(user, verify_token)
    return await _result(session, user, tokens, membership)


async def login(*, session: AsyncSession, data: LoginRequest) -> AuthResult:
    await enforce_limits("login", account=data.email)
    email = data.email.strip().lower()
    security = (await runtime_settings.current()).security
    user = await session.scalar(select(models.User)
                                .where(func.lower(models.User.email) == email, models.User.deleted_at.is_(None))
                                .with_for_update())
    bad_credentials = AppError(ErrorCode.INVALID_CREDENTIALS, "Invalid email or password")
    if user is None:
        await _equalise_timing(data.password)
        await audit(session, action="login.failed", level="warn", message="Failed login for an unknown account",
                    user_id=None, email=email, reason="unknown_account")
        raise await _fail(session, bad_credentials)
    now = utcnow()
    if user.locked_until and user.locked_until > now:
        await audit(session, action="login.locked", level="warn", message="Login refused: account locked",
                    user_id=user.id)
        raise await _fail(session, _locked(user.locked_until))
    if not await verify_password(data.password, user.password_hash):
        attempts = (user.login_attempts or 0) + 1
        if attempts >= security.max_login_attempts:
            user.login_attempts, user.locked_until = 0, now + timedelta(minutes=security.lockout_duration)
            await audit(session, action="login.lockout", level="warn",
                        message=f"Account locked after {attempts} failed logins", user_id=user.id)
            raise await _fail(session, _locked(user.locked_until))
        user.login_attempts = attempts
        await audit(session, action="login.failed", level="warn", message="Failed login: wrong password",
                    user_id=user.id, reason="wrong_password", attempts=attempts)
        raise await _fail(session, bad_credentials)
    if user.status != "active":
        await audit(session, action="login.refused", level="warn", message=f"Login refused: account {user.status}",
                    user_id=user.id)
        raise await _fail(session, AppError(ErrorCode.UNAUTHORIZED, f"Account is {user.status}"))
    user.login_attempts, user.locked_until, user.last_login_at = 0, None, now
    tokens = await sessions.issue_tokens(session, user, remember=data.remember_me, device_info=data.device_info,
                                         ip_address=current_request().client_ip)
    await audit(session, action="login.success", message="Logged in", user_id=user.id,
                device=data.device_info, rememberMe=data.remember_me)
    return await _result(session, user, tokens)


def _locked(until: datetime) -> AppError:
    wait = max(1, int((until - utcnow()).total_seconds()))
    return AppError(ErrorCode.ACCOUNT_LOCKED, "Account is temporarily locked after repeated failed logins",
                    details={"lockedUntil": iso(until), "retryAfter": wait},
                    headers={"Retry-After": str(wait)})


# --------------------------------------------------------------------------- tokens


async def refresh(*, session: AsyncSession, data: RefreshRequest) -> TokenPair:
    row = await session.scalar(select(models.RefreshToken)
                               .where(models.RefreshToken.token == token_hash(data.refresh_token))
                               .with_for_update())
    if row is None:
        raise AppError(ErrorCode.INVALID_TOKEN, "Invalid refresh token", field="refreshToken")
    if row.revoked_at is not None:
        # Rotated or revoked tokens are never presented by their rightful holder.
        await sessions.revoke_family(session, row.family_id)
        await audit(session, action="refresh.reuse", level="error",
                    message="Reused refresh token: the session family was revoked", user_id=row.user_id,
                    familyId=str(row.family_id))
        raise await _fail(session, AppError(ErrorCode.INVALID_TOKEN, "Refresh token reuse detected; "
                                            "the session was revoked", field="refreshToken"))
    if row.expires_at <= utcnow():
        raise AppError(ErrorCode.TOKEN_EXPIRED, "Refresh token has expired", field="refreshToken")
    user = await session.get(models.User, row.user_id) if row.user_id else None
    if user is None or user.deleted_at is not None:
        raise AppError(ErrorCode.INVALID_TOKEN, "Account no longer exists", field="refreshToken")
    if user.status != "active":
        raise AppError(ErrorCode.UNAUTHORIZED, f"Account is {user.status}")
    tokens = await sessions.rotate(session, row, user)
    return TokenPair(token=tokens.token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in)


async def logout(*, session: AsyncSession, caller: Principal, data: LogoutRequest | None) -> Message:
    data = data or LogoutRequest()
    if data.all_devices:
        user = await users_service.load_user(session, caller.id, for_update=True)
        await sessions.revoke_all_sessions(session, user)
    elif data.refresh_token:
        row = await session.scalar(select(models.RefreshToken)
                                   .where(models.RefreshToken.token == token_hash(data.refresh_token),
                                          models.RefreshToken.user_id == caller.id))
        if row is not None:
            await sessions.revoke_family(session, row.family_id)
    await sessions.revoke_access_token(caller.jti, caller.exp)
    await audit(session, action="logout", message="Logged out" + (" on all devices" if data.all_devices else ""),
                user_id=caller.id, allDevices=data.all_devices)
    return Message(message="Logged out of all devices" if data.all_devices else "Logged out")


# --------------------------------------------------------------------------- passwords


async def forgot_password(*, session: AsyncSession, data: ForgotPasswordRequest) -> Message:
    await enforce_limits("forgot-password", account=data.email)
    email = normalize_email(data.email)
    user = await session.scalar(select(models.User)
                                .where(func.lower(models.User.email) == email, models.User.deleted_at.is_(None)))
    if user is not None and user.status == "active":
        token = new_opaque_token()
        user.password_reset_token = token_hash(token)
        user.password_reset_expires = utcnow() + get_settings().reset_token_expires_in
        await audit(session, action="password.reset_requested", message="Password reset requested",
                    user_id=user.id)
        await send_mail(to=user.email, subject="Reset your Troupe password",
                        body=(f"Hello {user.first_name},\n\nSomeone (hopefully you) asked to reset your password.\n\n"
                              f"Reset token: {token}\n\nPOST /api/auth/reset-password "
                              f"{{\"token\": \"<token>\", \"password\": \"<new password>\"}}\n"
                              f"{await _link('/reset-password', token)}\nThe token is single-use and expires in "
                              f"{get_settings().reset_token_expires_in}. If you did not ask, ignore this message."),
                        headers={"X-Troupe-Kind": "reset-password"})
    return Message(message=FORGOT_MESSAGE)


async def reset_password(*, session: AsyncSession, data: ResetPasswordRequest) -> Message:
    user = await session.scalar(select(models.User)
                                .where(models.User.password_reset_token == token_hash(data.token),
                                       models.User.deleted_at.is_(None))
                                .with_for_update())
    if user is None:
        raise AppError(ErrorCode.INVALID_TOKEN, "Invalid or already used reset token", field="token")
    if user.password_reset_expires is None or user.password_reset_expires <= utcnow():
        raise AppError(ErrorCode.RESOURCE_EXPIRED, "Reset token has expired", field="token")
    await check_strength(data.password, username=user.username, email=user.email)
    await _set_password(session, user, data.password)
    # The link reached the mailbox, so the address is proven; a lockout ends with the reset.
    user.email_verified, user.login_attempts, user.locked_until = True, 0, None
    await audit(session, action="password.reset", level="warn", message="Password reset with an emailed token",
                user_id=user.id)
    return Message(message="Password has been reset; sign in with the new password")


async def _set_password(session: AsyncSession, user: models.User, password: str) -> None:
    user.password_hash = await hash_password(password)
    user.password_changed_at = utcnow()
    user.password_reset_token, user.password_reset_expires = None, None
    await sessions.revoke_all_sessions(session, user)


async def change_password(*, session: AsyncSession, caller: Principal, data: ChangePasswordRequest) -> AuthResult:
    await enforce_limits("change-password", account=str(caller.id))
    user = await users_service.load_user(session, caller.id, for_update=True)
    if not await verify_password(data.current_password, user.password_hash):
        await audit(session, action="password.change_failed", level="warn",
                    message="Password change refused: wrong current password", user_id=user.id)
        raise await _fail(session, AppError(ErrorCode.INVALID_CREDENTIALS, "Current password is incorrect",
                                            field="currentPassword"))
    await check_strength(data.new_password, field="newPassword", username=user.username, email=user.email)
    if data.new_password == data.current_password:
        raise invalid("The new password must differ from the current one", field="newPassword",
                      code=ErrorCode.WEAK_PASSWORD)
    await _set_password(session, user, data.new_password)
    await sessions.revoke_access_token(caller.jti, caller.exp)
    tokens = await sessions.issue_tokens(session, user, ip_address=current_request().client_ip)
    await audit(session, action="password.change", level="warn",
                message="Password changed; other sessions were revoked", user_id=user.id)
    return await _result(session, user, tokens)


async def verify_email(*, session: AsyncSession, data: VerifyEmailRequest) -> EmailVerified:
    expiry, _, _ = data.token.partition(".")
    user = None
    if expiry.isdigit():
        user = await session.scalar(select(models.User)
                                    .where(models.User.email_verification_token == token_hash(data.token),
                                           models.User.deleted_at.is_(None))
                                    .with_for_update())
    if user is None:
        raise AppError(ErrorCode.INVALID_TOKEN, "Invalid or already used verification token", field="token")
    if int(expiry) <= time.time():
        raise AppError(ErrorCode.RESOURCE_EXPIRED, "Verification token has expired", field="token")
    user.email_verified, user.email_verification_token = True, None
    await audit(session, action="email.verified", message="Email address verified", user_id=user.id)
    return EmailVerified(message="Email address verified", email_verified=True)

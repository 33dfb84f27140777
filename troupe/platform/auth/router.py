from __future__ import annotations

from fastapi import APIRouter, Body

from troupe.platform.auth import service
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
from troupe.platform.deps import CurrentUser, DbSession
from troupe.platform.schemas import Envelope, Message, ok

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", response_model=Envelope[AuthResult], status_code=201,
             summary="Register (role is always user)")
async def register(body: RegisterRequest, session: DbSession) -> Envelope[AuthResult]:
    return ok(await service.register(session=session, data=body))


@router.post("/login", response_model=Envelope[AuthResult])
async def login(body: LoginRequest, session: DbSession) -> Envelope[AuthResult]:
    return ok(await service.login(session=session, data=body))


@router.post("/refresh", response_model=Envelope[TokenPair], summary="Rotate the refresh token")
async def refresh(body: RefreshRequest, session: DbSession) -> Envelope[TokenPair]:
    return ok(await service.refresh(session=session, data=body))


@router.post("/logout", response_model=Envelope[Message])
async def logout(user: CurrentUser, session: DbSession,
                 body: LogoutRequest | None = Body(None)) -> Envelope[Message]:
    return ok(await service.logout(session=session, caller=user, data=body))


@router.post("/forgot-password", response_model=Envelope[Message])
async def forgot_password(body: ForgotPasswordRequest, session: DbSession) -> Envelope[Message]:
    return ok(await service.forgot_password(session=session, data=body))


@router.post("/reset-password", response_model=Envelope[Message])
async def reset_password(body: ResetPasswordRequest, session: DbSession) -> Envelope[Message]:
    return ok(await service.reset_password(session=session, data=body))


@router.post("/change-password", response_model=Envelope[AuthResult],
             summary="Change password; other sessions are revoked and a fresh pair is returned")
async def change_password(body: ChangePasswordRequest, user: CurrentUser,
                          session: DbSession) -> Envelope[AuthResult]:
    return ok(await service.change_password(session=session, caller=user, data=body))


@router.post("/verify-email", response_model=Envelope[EmailVerified])
async def verify_email(body: VerifyEmailRequest, session: DbSession) -> Envelope[EmailVerified]:
    return ok(await service.verify_email(session=session, data=body))

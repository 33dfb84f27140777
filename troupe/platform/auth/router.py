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

# DbSession commits only after the response has been sent (FastAPI's request-scoped
# yield dependencies), so writes commit here: a client acting on the answer (logout,
# then refresh) must find them, and a failed commit must not answer success.
router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", response_model=Envelope[AuthResult], status_code=201,
             summary="Register (role is always user)")
async def register(body: RegisterRequest, session: DbSession) -> Envelope[AuthResult]:
    result = await service.register(session=session, data=body)
    await session.commit()
    return ok(result)


@router.post("/login", response_model=Envelope[AuthResult])
async def login(body: LoginRequest, session: DbSession) -> Envelope[AuthResult]:
    result = await service.login(session=session, data=body)
    await session.commit()
    return ok(result)


@router.post("/refresh", response_model=Envelope[TokenPair], summary="Rotate the refresh token")
async def refresh(body: RefreshRequest, session: DbSession) -> Envelope[TokenPair]:
    result = await service.refresh(session=session, data=body)
    await session.commit()
    return ok(result)


@router.post("/logout", response_model=Envelope[Message])
async def logout(user: CurrentUser, session: DbSession,
                 body: LogoutRequest | None = Body(None)) -> Envelope[Message]:
    result = await service.logout(session=session, caller=user, data=body)
    await session.commit()
    return ok(result)


@router.post("/forgot-password", response_model=Envelope[Message])
async def forgot_password(body: ForgotPasswordRequest, session: DbSession) -> Envelope[Message]:
    result = await service.forgot_password(session=session, data=body)
    await session.commit()
    return ok(result)


@router.post("/reset-password", response_model=Envelope[Message])
async def reset_password(body: ResetPasswordRequest, session: DbSession) -> Envelope[Message]:
    result = await service.reset_password(session=session, data=body)
    await session.commit()
    return ok(result)


@router.post("/change-password", response_model=Envelope[AuthResult],
             summary="Change password; other sessions are revoked and a fresh pair is returned")
async def change_password(body: ChangePasswordRequest, user: CurrentUser,
                          session: DbSession) -> Envelope[AuthResult]:
    result = await service.change_password(session=session, caller=user, data=body)
    await session.commit()
    return ok(result)


@router.post("/verify-email", response_model=Envelope[EmailVerified])
async def verify_email(body: VerifyEmailRequest, session: DbSession) -> Envelope[EmailVerified]:
    result = await service.verify_email(session=session, data=body)
    await session.commit()
    return ok(result)

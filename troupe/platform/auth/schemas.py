"""Auth request and response bodies (the spec's 认证接口)."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from troupe.platform.auth.passwords import EMAIL_SCHEMA
from troupe.platform.schemas import CamelModel, StrictInput
from troupe.platform.users.schemas import Membership, UserOut


class _SecretInput(StrictInput):
    # Passwords are taken byte for byte: no whitespace stripping.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=False)


class RegisterRequest(_SecretInput):
    email: str = Field(max_length=255, json_schema_extra=EMAIL_SCHEMA)
    username: str = Field(min_length=3, max_length=30, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    password: str = Field(max_length=256)
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    invite_code: str | None = Field(None, max_length=200)


class LoginRequest(_SecretInput):
    email: str = Field(max_length=255, json_schema_extra=EMAIL_SCHEMA)
    password: str = Field(max_length=256)
    remember_me: bool = False
    device_info: str | None = Field(None, max_length=500)


class RefreshRequest(StrictInput):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutRequest(StrictInput):
    refresh_token: str | None = Field(None, max_length=200)
    all_devices: bool = False


class ForgotPasswordRequest(StrictInput):
    email: str = Field(max_length=255, json_schema_extra=EMAIL_SCHEMA)


class ResetPasswordRequest(_SecretInput):
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(max_length=256)


class ChangePasswordRequest(_SecretInput):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(max_length=256)


class VerifyEmailRequest(StrictInput):
    token: str = Field(min_length=1, max_length=200)


class TokenPair(CamelModel):
    token: str
    refresh_token: str
    expires_in: int = Field(description="Access token lifetime in seconds")


class AuthResult(TokenPair):
    user: UserOut
    membership: Membership | None = Field(None, description="Set when registration accepted an inviteCode")


class EmailVerified(CamelModel):
    message: str
    email_verified: bool

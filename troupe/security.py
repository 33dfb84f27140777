"""Password hashing, tokens and the secret box; no HTTP here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import bcrypt
import jwt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from troupe.config import get_settings
from troupe.errors import AppError, ErrorCode

JWT_ALGORITHM = "HS256"


async def hash_password(password: str) -> str:
    # bcrypt at cost 12 takes ~250 ms: keep it off the event loop.
    rounds = get_settings().bcrypt_rounds
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds))
    return hashed.decode()


async def verify_password(password: str, hashed: str) -> bool:
    try:
        return await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed.encode())
    except ValueError:
        return False


def token_hash(token: str) -> str:
    """Opaque tokens (refresh, reset, verification, invitation) are stored hashed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def create_access_token(claims: dict[str, Any], *, max_lifetime: int | None = None) -> tuple[str, int]:
    """Sign the spec's payload; returns the token and its lifetime in seconds
    (JWT_EXPIRES_IN, or ``max_lifetime`` seconds when shorter)."""
    settings = get_settings()
    now = int(datetime.now(UTC).timestamp())
    lifetime = int(settings.jwt_expires_in.total_seconds())
    if max_lifetime is not None:
        lifetime = min(lifetime, max_lifetime)
    payload = {**claims, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    return jwt.encode(payload, settings.resolved_jwt_secret(), algorithm=JWT_ALGORITHM), lifetime


def decode_access_token(token: str) -> dict[str, Any]:
    """Verify signature and expiry with the algorithm pinned (``alg: none`` and
    algorithm confusion are refused)."""
    try:
        return jwt.decode(token, get_settings().resolved_jwt_secret(), algorithms=[JWT_ALGORITHM],
                          options={"require": ["sub", "exp", "iat", "jti"]})
    except jwt.ExpiredSignatureError as exc:
        raise AppError(ErrorCode.TOKEN_EXPIRED, "Token has expired") from exc
    except jwt.PyJWTError as exc:
        raise AppError(ErrorCode.INVALID_TOKEN, "Invalid token") from exc


class SecretBox:
    """AES-256-GCM with a fresh 96-bit nonce per value. Stored form:
    ``enc:v1:<base64(nonce || ciphertext+tag)>``."""

    PREFIX = "enc:v1:"

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key or get_settings().resolved_secrets_key())

    @classmethod
    def is_sealed(cls, value: object) -> bool:
        return isinstance(value, str) and value.startswith(cls.PREFIX)

    def seal(self, plaintext: str) -> str:
        if self.is_sealed(plaintext):
            return plaintext
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, plaintext.encode(), b"troupe")
        return self.PREFIX + base64.b64encode(blob).decode()

    def open(self, sealed: str) -> str:
        if not self.is_sealed(sealed):
            return sealed
        blob = base64.b64decode(sealed[len(self.PREFIX):])
        return self._aead.decrypt(blob[:12], blob[12:], b"troupe").decode()


def access_claims(*, user_id: str, email: str, username: str, role: str, companies: list[str],
                  token_version: int) -> dict[str, Any]:
    """The spec's JWT payload (iat/exp/jti are added when signing). ``tv`` ties the
    token to the account's token_version so that one bump revokes them all."""
    from troupe.rbac import role_permissions

    return {"sub": user_id, "email": email, "username": username, "role": role,
            "permissions": sorted(role_permissions(role)), "companies": companies, "tv": token_version}

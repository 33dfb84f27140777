"""Password strength rules (VAL_005) and email shape (VAL_004)."""

from __future__ import annotations

import re

from troupe.errors import ErrorCode, invalid

MIN_LENGTH = 8
# bcrypt only reads the first 72 bytes; longer secrets would be silently cut.
MAX_BYTES = 72

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")

RULES = (f"at least {MIN_LENGTH} characters and at most {MAX_BYTES} bytes, with an upper-case letter, "
         "a lower-case letter, a digit and a symbol, and not containing the username or the email name")


def normalize_email(value: str, *, field: str = "email") -> str:
    email = value.strip().lower()
    if len(email) > 255 or not _EMAIL.match(email) or ".." in email:
        raise invalid("Invalid email address", field=field, code=ErrorCode.INVALID_EMAIL)
    return email


def check_strength(password: str, *, field: str = "password", username: str | None = None,
                   email: str | None = None) -> None:
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password.encode()) > MAX_BYTES:
        problems.append(f"at most {MAX_BYTES} bytes")
    if not re.search(r"[a-z]", password):
        problems.append("a lower-case letter")
    if not re.search(r"[A-Z]", password):
        problems.append("an upper-case letter")
    if not re.search(r"\d", password):
        problems.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password):
        problems.append("a symbol")
    lowered = password.lower()
    for personal in (username, (email or "").split("@")[0]):
        if personal and len(personal) >= 3 and personal.lower() in lowered:
            problems.append("no username or email name inside")
            break
    if problems:
        raise invalid("Password is too weak: needs " + ", ".join(problems), field=field,
                      details={"rules": RULES, "missing": problems}, code=ErrorCode.WEAK_PASSWORD)

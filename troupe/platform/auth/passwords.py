"""Password strength rules (VAL_005) and email shape (VAL_004).

The rules are the system settings' ``security.passwordPolicy`` (minimum length,
required character classes); the 72-byte bcrypt ceiling and the ban on the
username or email name inside the password always apply."""

from __future__ import annotations

import re

from troupe.errors import ErrorCode, invalid

# bcrypt only reads the first 72 bytes; longer secrets would be silently cut.
MAX_BYTES = 72

EMAIL_PATTERN = (r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_EMAIL = re.compile(EMAIL_PATTERN)
# The document states the shape; the check stays in normalize_email (VAL_004, not a generic VAL_001).
EMAIL_SCHEMA = {"format": "email", "pattern": EMAIL_PATTERN}



def normalize_email(value: str, *, field: str = "email") -> str:
    email = value.strip().lower()
    if len(email) > 255 or not _EMAIL.match(email) or ".." in email:
        raise invalid("Invalid email address", field=field, code=ErrorCode.INVALID_EMAIL)
    return email


async def check_strength(password: str, *, field: str = "password", username: str | None = None,
                         email: str | None = None) -> None:
    from troupe import runtime_settings

    policy = (await runtime_settings.current()).security.password_policy
    required = [(policy.require_lowercase, r"[a-z]", "a lower-case letter"),
                (policy.require_uppercase, r"[A-Z]", "an upper-case letter"),
                (policy.require_numbers, r"\d", "a digit"),
                (policy.require_symbols, r"[^A-Za-z0-9]", "a symbol")]
    problems = []
    if len(password) < policy.min_length:
        problems.append(f"at least {policy.min_length} characters")
    if len(password.encode()) > MAX_BYTES:
        problems.append(f"at most {MAX_BYTES} bytes")
    problems += [label for wanted, pattern, label in required if wanted and not re.search(pattern, password)]
    lowered = password.lower()
    for personal in (username, (email or "").split("@")[0]):
        if personal and len(personal) >= 3 and personal.lower() in lowered:
            problems.append("no username or email name inside")
            break
    if problems:
        classes = [label for wanted, _, label in required if wanted]
        rules = (f"at least {policy.min_length} characters and at most {MAX_BYTES} bytes"
                 + (f", with {', '.join(classes)}" if classes else "")
                 + ", and not containing the username or the email name")
        raise invalid("Password is too weak: needs " + ", ".join(problems), field=field,
                      details={"rules": rules, "missing": problems}, code=ErrorCode.WEAK_PASSWORD)

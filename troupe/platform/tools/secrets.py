"""Sealing and masking of secret values inside stored configurations.

Shared by tools (credentials, secret headers, install configuration) and
workflows (``configuration.secrets``). Stored values are ``SecretBox`` ciphertexts;
callers only ever see ``MASK``, and sending ``MASK`` back keeps the stored value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from troupe.errors import invalid
from troupe.security import SecretBox

MASK = "********"

_SECRET_NAME = re.compile(r"(authorization|cookie|token|secret|key|password|passwd|credential)", re.I)


def looks_secret(name: str) -> bool:
    """Header or setting names that carry a secret (Authorization, X-Api-Key, *token*, ...)."""
    return bool(_SECRET_NAME.search(name))


def seal_map(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None, *, field: str,
             is_secret: Callable[[str], bool] = lambda _: True) -> dict[str, Any] | None:
    """Seal the secret entries of ``new``; an entry sent back as ``MASK`` keeps the
    stored (already sealed) value of ``old``."""
    if new is None:
        return None
    box = SecretBox()
    old = old or {}
    sealed: dict[str, Any] = {}
    for name, value in new.items():
        if not is_secret(name) or not isinstance(value, str):
            sealed[name] = value
        elif value == MASK:
            if not SecretBox.is_sealed(old.get(name)):
                raise invalid(f"{field}.{name}: there is no stored secret to keep; send the value",
                              field=f"{field}.{name}")
            sealed[name] = old[name]
        else:
            sealed[name] = box.seal(value)
    return sealed


def mask_map(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Replace every sealed value by ``MASK``."""
    if values is None:
        return None
    return {name: MASK if SecretBox.is_sealed(value) else value for name, value in values.items()}


def strip_sealed(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop sealed values entirely (exports)."""
    return {name: value for name, value in (values or {}).items() if not SecretBox.is_sealed(value)}

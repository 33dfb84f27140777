"""The one error the client raises for an API failure."""

from __future__ import annotations

from typing import Any


class TroupeError(Exception):
    """An API error in the spec's envelope: ``code`` (``AUTH_003``, ``VAL_001``...), ``message``,
    ``field`` (the offending input, when there is one), ``status`` (HTTP; 0 when the server
    could not be reached) and ``details``."""

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 0,
                 details: Any = None, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.details = details
        self.request_id = request_id

    @property
    def is_auth(self) -> bool:
        return self.code.startswith("AUTH_") or self.status in (401, 403)

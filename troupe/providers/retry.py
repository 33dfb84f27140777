"""One retry policy for model calls: 429 and 5xx answers (``ProviderError`` with
code SYS_004 or a retryable SYS_003) are tried again with exponential backoff and
full jitter, waiting at least what the server's ``Retry-After`` asked, within the
call's deadline. The SDKs' own retries are off (``max_retries=0``), so this is
the only policy; a workflow's retry policy still applies on top, per node attempt.

Lean: standard library and tenacity only (imported by agent actors).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from troupe.providers.base import ProviderError

T = TypeVar("T")

MAX_ATTEMPTS = 5
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 20.0
# A server asking for longer than this is not waited for: the call fails with its error.
RETRY_AFTER_CAP_S = 60.0
RETRIED_CODES = frozenset({"SYS_004", "SYS_003"})


def retry_after_of(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date) or ``retry-after-ms``."""
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError):
        return None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable and exc.code in RETRIED_CODES


class Retries:
    """A policy bound to one call's deadline; ``waits`` lists the pauses taken."""

    def __init__(self, deadline: float, *, attempts: int = MAX_ATTEMPTS) -> None:
        self.deadline = deadline
        self.attempts = attempts
        self.waits: list[float] = []
        self._backoff = wait_exponential_jitter(initial=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S,
                                                jitter=BACKOFF_INITIAL_S)

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return max(backoff, float(asked)) if asked is not None else backoff

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if getattr(exc, "retry_after", None) is not None and exc.retry_after > RETRY_AFTER_CAP_S:  # type: ignore[union-attr]
            return True
        # Stop rather than sleep past the deadline: the caller gets the provider's own error.
        return (stop_after_attempt(self.attempts)(state)
                or time.monotonic() + float(state.upcoming_sleep or 0) >= self.deadline)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.waits.append(float(state.upcoming_sleep or 0))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(retry=retry_if_exception(_retryable), wait=self._wait, stop=self._stop,
                                 before_sleep=self._before_sleep, reraise=True)

        # tenacity awaits only what a coroutine function returns; ``fn`` may be a lambda.
        async def attempt() -> T:
            return await fn()

        return await retrying(attempt)

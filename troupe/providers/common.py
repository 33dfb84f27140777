"""Pieces every real provider shares: reading per-agent configuration, opening
sealed API keys, the HTTP client the SDKs get, and error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from troupe.infra.outbound import OutboundError, guarded_transport
from troupe.providers.base import ChatMessage, ProviderError
from troupe.security import SecretBox

# An SDK's HTTP client belongs to the event loop it first ran on.
_ClientFactory = Callable[[], Any]


def config_value(config: Mapping[str, Any] | None, *names: str) -> Any:
    """First non-empty value among ``names`` (camelCase as in the spec's JSON, or snake_case)."""
    for name in names:
        value = (config or {}).get(name)
        if value not in (None, ""):
            return value
    return None


def api_key_from(config: Mapping[str, Any] | None, fallback: str | None) -> str | None:
    """The per-agent key (stored sealed as ``enc:v1:...``) or the deployment's."""
    value = config_value(config, "apiKey", "api_key")
    if isinstance(value, str):
        return SecretBox().open(value) if SecretBox.is_sealed(value) else value
    return fallback


def as_chat_messages(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """System prompt (system messages joined) and the rest as (role, text) with
    ``tool`` results presented to the model as user turns: the provider
    interface carries no tool-call ids."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[tuple[str, str]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            turns.append(("user", f"Tool result:\n{message.content}"))
        else:
            turns.append((message.role, message.content))
    return system, turns


def merge_consecutive(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Anthropic and Gemini require alternating roles."""
    merged: list[tuple[str, str]] = []
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + text)
        else:
            merged.append((role, text))
    return merged


class LoopClients:
    """One SDK client per running event loop (Ray actors, tasks and tests each
    have their own loop; an HTTP connection pool must not cross them)."""

    def __init__(self, factory: _ClientFactory) -> None:
        self._factory = factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._factory()
        return client


def sdk_http_client(*, guarded: bool, timeout: float = 600.0) -> Any:
    """The ``httpx2.AsyncClient`` handed to the OpenAI/Anthropic/Google SDKs. A base
    URL taken from per-agent configuration is user-controlled, so its connections
    go through the outbound guard; the deployment's own URLs (environment) are
    trusted and may point at loopback or private hosts."""
    import httpx2

    if guarded:
        return httpx2.AsyncClient(transport=guarded_transport(httpx2), timeout=timeout, trust_env=False)
    return httpx2.AsyncClient(timeout=timeout)


def outbound_cause(exc: BaseException) -> OutboundError | None:
    """The guard's refusal, if one is somewhere in the exception chain (the SDKs
    wrap transport errors in their own connection errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OutboundError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def from_outbound(provider: str, error: OutboundError) -> ProviderError:
    """A refused destination is a configuration problem (BIZ_002, not retryable);
    anything else the guard raised (DNS failure, ...) keeps its code."""
    if error.reason == "destination_not_allowed":
        return ProviderError("BIZ_002", f"{provider}: {error.message}", retryable=False)
    return ProviderError(str(error.code), f"{provider}: {error.message}", retryable=error.retryable)


def from_status(provider: str, status: int, message: str) -> ProviderError:
    """The spec's code for an HTTP status from a model API."""
    if status == 429:
        return ProviderError("SYS_004", f"{provider} rate limit: {message}", retryable=True)
    if status == 408:
        return ProviderError("SYS_006", f"{provider} timed out: {message}", retryable=True)
    if status >= 500:
        return ProviderError("SYS_003", f"{provider} server error {status}: {message}", retryable=True)
    return ProviderError("SYS_003", f"{provider} rejected the request ({status}): {message}", retryable=False)


def timed_out(provider: str, seconds: float) -> ProviderError:
    return ProviderError("SYS_006", f"{provider} did not answer within {seconds:g}s", retryable=True)


def unreachable(provider: str, exc: BaseException) -> ProviderError:
    return ProviderError("SYS_007", f"{provider} unreachable: {exc}", retryable=True)


def context_window_of(provider: str, model: str) -> int | None:
    from troupe.providers.catalog import context_window

    return context_window(provider, model)


@contextlib.asynccontextmanager
async def sdk_errors(provider: str, sdk: Any, base_error: type[Exception],
                     timeout_s: float) -> AsyncIterator[None]:
    """Map the errors of the OpenAI and Anthropic SDKs (which share one error
    hierarchy) onto ProviderError, with a hard deadline around the call."""
    try:
        async with asyncio.timeout(timeout_s + 1):
            yield
    except OutboundError as exc:  # the guard's refusal, raised through the SDK's transport
        raise from_outbound(provider, exc) from exc
    except (TimeoutError, sdk.APITimeoutError) as exc:
        raise timed_out(provider, timeout_s) from exc
    except sdk.APIConnectionError as exc:
        blocked = outbound_cause(exc)
        raise (from_outbound(provider, blocked) if blocked else unreachable(provider, exc)) from exc
    except sdk.APIStatusError as exc:
        from troupe.providers.retry import retry_after_of

        error = from_status(provider, exc.status_code, exc.message)
        error.retry_after = retry_after_of(exc.response.headers)
        raise error from exc
    except base_error as exc:
        raise ProviderError("SYS_003", f"{provider}: {exc}", retryable=False) from exc


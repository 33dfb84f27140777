"""``get_provider(name, config=...)``: the one way the engine obtains a provider.

``config`` is the agent's provider configuration (camelCase keys, as in the
spec's JSON; snake_case also accepted): ``baseUrl``, ``apiKey`` (plain or sealed
``enc:v1:...``), and for ``custom`` ``endpoint``, ``headers``, ``contextWindow``;
for ``google`` ``apiVersion`` (default v1beta).

Trust: base URLs from the environment (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
GOOGLE_AI_BASE_URL, LOCAL_LLM_BASE_URL) are set by the operator and used as is,
loopback included. A ``baseUrl``/``endpoint`` from agent configuration is
user-controlled, so those connections go through the outbound guard (a private
or loopback host then needs TROUPE_OUTBOUND_ALLOWLIST)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from troupe.config import get_settings
from troupe.providers.base import Provider, ProviderError
from troupe.providers.common import api_key_from, config_value

PROVIDER_NAMES = ("openai", "anthropic", "google", "local", "custom", "simulated")

_cache: dict[tuple[str, ...], Provider] = {}
_lock = threading.Lock()


def _fingerprint(secret: str | None) -> str:
    # Cache keys never hold the key itself.
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "-"


def _cached(key: tuple[str, ...], build: Callable[[], Provider]) -> Provider:
    with _lock:
        provider = _cache.get(key)
        if provider is None:
            provider = _cache[key] = build()
        return provider


def _base_url(config: Mapping[str, Any] | None, deployment: str | None) -> tuple[str | None, bool]:
    """(base URL, guarded): a per-agent URL is guarded, the deployment's is not."""
    override = config_value(config, "baseUrl", "base_url")
    if override is not None:
        if not isinstance(override, str):
            raise ProviderError("BIZ_002", "baseUrl must be a string", retryable=False)
        return override, True
    return deployment, False


def _require_key(name: str, key: str | None, env: str) -> str:
    if not key:
        raise ProviderError("BIZ_002", f"provider {name!r} has no API key: set {env} or the agent's apiKey",
                            retryable=False)
    return key


def get_provider(name: str, *, config: Mapping[str, Any] | None = None) -> Provider:
    """The provider ``name`` configured by ``config``; clients are cached per
    (name, base URL, key). Raises ProviderError BIZ_002 (not retryable) for an
    unknown name or a missing key/URL."""
    settings = get_settings()
    provider_name = (name or "").strip().lower()
    if provider_name == "simulated":
        from troupe.providers.simulated import SimulatedProvider

        return _cached(("simulated",), SimulatedProvider)

    if provider_name == "openai":
        from troupe.providers.openai import OpenAIProvider

        key = _require_key("openai", api_key_from(config, settings.openai_api_key), "OPENAI_API_KEY")
        base_url, guarded = _base_url(config, settings.openai_base_url)
        return _cached(("openai", base_url or "", str(guarded), _fingerprint(key)),
                       lambda: OpenAIProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "local":
        from troupe.providers.local import KEYLESS, LocalProvider

        key = api_key_from(config, None) or KEYLESS
        base_url, guarded = _base_url(config, settings.local_llm_base_url)
        if not base_url:
            raise ProviderError("BIZ_002", "provider 'local' needs LOCAL_LLM_BASE_URL or the agent's baseUrl",
                                retryable=False)
        return _cached(("local", base_url, str(guarded), _fingerprint(key)),
                       lambda: LocalProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "anthropic":
        from troupe.providers.anthropic import AnthropicProvider

        key = _require_key("anthropic", api_key_from(config, settings.anthropic_api_key), "ANTHROPIC_API_KEY")
        base_url, guarded = _base_url(config, settings.anthropic_base_url)
        return _cached(("anthropic", base_url or "", str(guarded), _fingerprint(key)),
                       lambda: AnthropicProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "google":
        from troupe.providers.google import GoogleProvider

        key = _require_key("google", api_key_from(config, settings.google_ai_api_key), "GOOGLE_AI_API_KEY")
        base_url, guarded = _base_url(config, settings.google_ai_base_url)
        version = str(config_value(config, "apiVersion", "api_version") or "v1beta")
        return _cached(("google", base_url or "", str(guarded), _fingerprint(key), version),
                       lambda: GoogleProvider(api_key=key, base_url=base_url, guarded=guarded, api_version=version))

    if provider_name == "custom":
        from troupe.providers.custom import CustomHTTPProvider

        endpoint = config_value(config, "endpoint", "baseUrl", "base_url", "url")
        if not isinstance(endpoint, str):
            raise ProviderError("BIZ_002", "provider 'custom' needs the agent's endpoint URL", retryable=False)
        headers = config_value(config, "headers") or {}
        window = config_value(config, "contextWindow", "context_window")
        if not isinstance(headers, Mapping) or (window is not None and not isinstance(window, int)):
            raise ProviderError("BIZ_002", "custom provider: headers must be an object, contextWindow an integer",
                                retryable=False)
        # No client to cache: the outbound guard builds one per request.
        return CustomHTTPProvider(endpoint=endpoint, api_key=api_key_from(config, None), headers=headers,
                                  context_window=window)

    raise ProviderError("BIZ_002", f"unknown provider {name!r} (known: {', '.join(PROVIDER_NAMES)})",
                        retryable=False)

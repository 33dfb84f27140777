"""``get_provider(name, config=...)``: the one way the engine obtains a provider.

``config`` is the agent's provider configuration (camelCase keys, as in the
spec's JSON; snake_case also accepted): ``baseUrl``, ``apiKey`` (plain or sealed
``enc:v1:...``), and for ``custom`` ``endpoint``, ``headers``, ``contextWindow``;
for ``google`` ``apiVersion`` (default v1beta).

Trust: base URLs from the environment (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
GOOGLE_AI_BASE_URL, LOCAL_LLM_BASE_URL) and those listed per provider in
TROUPE_PROVIDER_BASE_URLS are set by the operator and used as is, loopback
included. Any other ``baseUrl``/``endpoint`` from agent configuration is
user-controlled, so those connections go through the outbound guard (a private
or loopback host then needs TROUPE_OUTBOUND_ALLOWLIST).

Keys: the deployment's keys (OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_AI_API_KEY)
are only ever sent to the provider's official endpoint or to an operator's base
URL. A user-chosen ``baseUrl`` needs the agent's own ``apiKey`` (stored sealed);
without one the provider is refused (BIZ_002), so the deployment's key never
reaches a host a user picked."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

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


# The providers' own API hosts: the deployment's key may always go there (over https).
OFFICIAL_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com",
                  "google": "generativelanguage.googleapis.com"}


def _url_parts(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme.lower() == "https" else 80
    return parts.scheme.lower(), parts.hostname.lower(), port or default, parts.path.rstrip("/")


def operator_url(provider: str, url: str, deployment: str | None) -> bool:
    """True when ``url`` is the provider's official endpoint, the deployment's base URL
    (environment) or under one listed for this provider in TROUPE_PROVIDER_BASE_URLS:
    same scheme, host and port, and a path equal to or below the configured one."""
    mine = _url_parts(url)
    if mine is None:
        return False
    scheme, host, port, path = mine
    official = OFFICIAL_HOSTS.get(provider)
    if official is not None and (scheme, host, port) == ("https", official, 443):
        return True
    configured: Iterable[str] = [*([deployment] if deployment else []),
                                 *get_settings().provider_base_urls.get(provider, [])]
    for base in configured:
        theirs = _url_parts(base)
        if theirs is not None and theirs[:3] == (scheme, host, port) and (
                path == theirs[3] or path.startswith(theirs[3] + "/")):
            return True
    return False


def _base_url(config: Mapping[str, Any] | None, deployment: str | None,
              provider: str = "") -> tuple[str | None, bool]:
    """(base URL, guarded): a user-chosen URL is guarded; the deployment's, the official
    endpoint and the operator's TROUPE_PROVIDER_BASE_URLS are not."""
    override = config_value(config, "baseUrl", "base_url")
    if override is not None:
        if not isinstance(override, str):
            raise ProviderError("BIZ_002", "baseUrl must be a string", retryable=False)
        return override, not operator_url(provider, override, deployment)
    return deployment, False


def _key_for(name: str, config: Mapping[str, Any] | None, deployment_key: str | None, env: str,
             base_url: str | None, user_url: bool) -> str:
    """The agent's own key, else the deployment's; never the deployment's for a user-chosen URL."""
    own = api_key_from(config, None)
    if own:
        return own
    if user_url:
        raise ProviderError(
            "BIZ_002", f"provider {name!r}: baseUrl {base_url} is neither {name}'s official endpoint nor one the "
                       f"administrator configured (TROUPE_PROVIDER_BASE_URLS), so the deployment's {env} is never "
                       "sent there; give the agent its own apiKey (stored sealed)", retryable=False)
    if not deployment_key:
        raise ProviderError("BIZ_002", f"provider {name!r} has no API key: set {env} or the agent's apiKey",
                            retryable=False)
    return deployment_key


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

        base_url, guarded = _base_url(config, settings.openai_base_url, "openai")
        key = _key_for("openai", config, settings.openai_api_key, "OPENAI_API_KEY", base_url, guarded)
        return _cached(("openai", base_url or "", str(guarded), _fingerprint(key)),
                       lambda: OpenAIProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "local":
        from troupe.providers.local import KEYLESS, LocalProvider

        key = api_key_from(config, None) or KEYLESS
        base_url, guarded = _base_url(config, settings.local_llm_base_url, "local")
        if not base_url:
            raise ProviderError("BIZ_002", "provider 'local' needs LOCAL_LLM_BASE_URL or the agent's baseUrl",
                                retryable=False)
        return _cached(("local", base_url, str(guarded), _fingerprint(key)),
                       lambda: LocalProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "anthropic":
        from troupe.providers.anthropic import AnthropicProvider

        base_url, guarded = _base_url(config, settings.anthropic_base_url, "anthropic")
        key = _key_for("anthropic", config, settings.anthropic_api_key, "ANTHROPIC_API_KEY", base_url, guarded)
        return _cached(("anthropic", base_url or "", str(guarded), _fingerprint(key)),
                       lambda: AnthropicProvider(api_key=key, base_url=base_url, guarded=guarded))

    if provider_name == "google":
        from troupe.providers.google import GoogleProvider

        base_url, guarded = _base_url(config, settings.google_ai_base_url, "google")
        key = _key_for("google", config, settings.google_ai_api_key, "GOOGLE_AI_API_KEY", base_url, guarded)
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

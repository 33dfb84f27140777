"""Model metadata: the one place that knows which providers exist and how large
each known model's context window is. Providers themselves live beside this
module; validation (agents) and runtime limits read from here."""

from __future__ import annotations

from typing import Literal, get_args

ProviderName = Literal["openai", "anthropic", "google", "local", "custom", "simulated"]
PROVIDERS: tuple[str, ...] = get_args(ProviderName)

# Context windows in tokens. Unknown models are allowed (providers ship new ones
# faster than we do); they are then bounded only by the agent's own contextWindow.
CONTEXT_WINDOWS: dict[str, dict[str, int]] = {
    "openai": {
        "gpt-4o": 128_000,
        "gpt-4o-mini": 128_000,
        "gpt-4-turbo": 128_000,
        "gpt-4": 8_192,
        "gpt-3.5-turbo": 16_385,
        "o1": 200_000,
        "o1-mini": 128_000,
    },
    "anthropic": {
        "claude-3-5-sonnet": 200_000,
        "claude-3-5-haiku": 200_000,
        "claude-3-opus": 200_000,
        "claude-3-haiku": 200_000,
    },
    "google": {
        "gemini-1.5-pro": 2_000_000,
        "gemini-1.5-flash": 1_000_000,
        "gemini-2.0-flash": 1_000_000,
    },
    # The offline deterministic provider used for demos and tests.
    "simulated": {"simulated": 32_768},
}

DEFAULT_CONTEXT_WINDOW = 8_192


def context_window(provider: str, model: str) -> int | None:
    """The model's known context window, or None when the model is not catalogued.

    Dated snapshots (``claude-3-5-sonnet-20241022``) resolve to their family."""
    models = CONTEXT_WINDOWS.get(provider, {})
    if model in models:
        return models[model]
    best = max((name for name in models if model.startswith(name + "-")), key=len, default=None)
    return models[best] if best else None

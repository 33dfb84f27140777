"""List prices of known models, USD per 1M tokens (input, output).

Prices are the providers' published standard (non-batch, non-cached) rates at the
time of writing; a dated snapshot (``gpt-4o-2024-08-06``) is priced as its
family. A model not in the table costs 0 and the result says the price is unknown
(``raw["pricing"] == "unknown"``) rather than guessing.

The operator adds or overrides prices with ``TROUPE_MODEL_PRICES``: a JSON object
``{"<provider>": {"<model or family>": [input, output]}}`` in USD per 1M tokens,
laid over the built-in table (``local`` models are free unless priced here)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from troupe.providers.base import ProviderError

PRICES_PER_MILLION: dict[str, dict[str, tuple[float, float]]] = {
    "openai": {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4-turbo": (10.00, 30.00),
        "gpt-4": (30.00, 60.00),
        "gpt-3.5-turbo": (0.50, 1.50),
        "o1": (15.00, 60.00),
        "o1-mini": (1.10, 4.40),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
    },
    "anthropic": {
        "claude-3-opus": (15.00, 75.00),
        "claude-3-sonnet": (3.00, 15.00),
        "claude-3-haiku": (0.25, 1.25),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-opus-4": (15.00, 75.00),
        "claude-haiku-4-5": (1.00, 5.00),
    },
    "google": {
        "gemini-1.5-pro": (1.25, 5.00),
        "gemini-1.5-flash": (0.075, 0.30),
        "gemini-2.0-flash": (0.10, 0.40),
        "gemini-2.0-flash-lite": (0.075, 0.30),
        "gemini-2.5-pro": (1.25, 10.00),
        "gemini-2.5-flash": (0.30, 2.50),
    },
}


@dataclass(frozen=True)
class Cost:
    usd: float
    # "table" when priced from PRICES_PER_MILLION (or TROUPE_MODEL_PRICES), "unknown" when not in it.
    pricing: str


PRICES_ENV = "TROUPE_MODEL_PRICES"
_overrides: tuple[str, dict[str, dict[str, tuple[float, float]]]] = ("", {})


def parse_prices(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``TROUPE_MODEL_PRICES``' JSON; ValueError names what is wrong."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{PRICES_ENV} must be a JSON object of providers")
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for provider, models in data.items():
        if not isinstance(models, dict):
            raise ValueError(f"{PRICES_ENV}.{provider} must be an object of models")
        for model, pair in models.items():
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in pair)):
                raise ValueError(f"{PRICES_ENV}.{provider}.{model} must be [input, output] USD per 1M tokens")
            table.setdefault(str(provider), {})[str(model).strip().lower()] = (float(pair[0]), float(pair[1]))
    return table


def _table(provider: str) -> dict[str, tuple[float, float]]:
    global _overrides
    text = os.environ.get(PRICES_ENV, "")
    if text != _overrides[0]:
        # Read once per value; a malformed table is an operator error that must not be priced as 0.
        try:
            _overrides = (text, parse_prices(text) if text.strip() else {})
        except ValueError as exc:
            raise ProviderError("BIZ_002", f"model price table: {exc}", retryable=False) from exc
    return {**PRICES_PER_MILLION.get(provider, {}), **_overrides[1].get(provider, {})}


def price_of(provider: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, matching the longest family prefix."""
    table = _table(provider)
    name = model.strip().lower()
    name = name.split("/", 1)[1] if name.startswith("models/") else name
    if name in table:
        return table[name]
    family = max((known for known in table if name.startswith(known + "-")), key=len, default=None)
    return table[family] if family else None


def cost_of(provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
    price = price_of(provider, model)
    if price is None:
        return Cost(0.0, "unknown")
    usd = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
    return Cost(round(usd, 8), "table")

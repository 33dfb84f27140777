"""Any OpenAI-compatible local server (Ollama, vLLM, LM Studio, llama.cpp
server) through the same official OpenAI SDK."""

from __future__ import annotations

from troupe.providers.openai import OpenAICompatibleProvider
from troupe.providers.pricing import Cost, cost_of, price_of

# Keyless servers still need a non-empty key for the SDK's Authorization header.
KEYLESS = "no-key"


class LocalProvider(OpenAICompatibleProvider):
    name = "local"
    max_tokens_param = "max_tokens"

    def _cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
        # Self-hosted: no per-token bill unless the operator priced the model (TROUPE_MODEL_PRICES).
        if price_of(self.name, model) is not None:
            return cost_of(self.name, model, prompt_tokens, completion_tokens)
        return Cost(0.0, "self-hosted")

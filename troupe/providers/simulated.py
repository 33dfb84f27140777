"""The deterministic offline provider ``simulated``.

Every answer is labelled ``[simulated]`` and flagged ``simulated=True``; the
same request always gives the same text and token counts, and the cost is 0.
Tests drive it through ``CompletionRequest.extra``:

- ``simulatedLatencyMs``: sleep this long before answering;
- ``simulateError``: fail with this error code (e.g. ``SYS_003``);
- ``simulateFailAttempts`` with ``attempt``: fail while ``attempt`` is below it
  (exercises retry policies deterministically).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from troupe.providers.base import CompletionRequest, CompletionResult, ProviderError

LABEL = "[simulated]"


def count_tokens(text: str) -> int:
    """About four characters per token, never zero for non-empty text."""
    return max(1, (len(text) + 3) // 4) if text else 0


class SimulatedProvider:
    name = "simulated"

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        started = time.perf_counter()
        extra = request.extra or {}
        latency = float(extra.get("simulatedLatencyMs", 0) or 0) / 1000
        if latency > 0:
            await asyncio.sleep(latency)
        code = extra.get("simulateError")
        if code:
            raise ProviderError(str(code), f"{LABEL} injected failure {code}", retryable=True)
        if int(extra.get("attempt", 0)) < int(extra.get("simulateFailAttempts", 0) or 0):
            raise ProviderError("SYS_003", f"{LABEL} injected failure on attempt {extra.get('attempt')}")
        prompt = "\n".join(m.content for m in request.messages)
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        text = f"{LABEL} {request.model} reply {digest} to: {last_user[:200]}"
        if request.response_format == "json":
            import json

            text = json.dumps({"simulated": True, "reply": text})
        completion = min(count_tokens(text), request.max_tokens)
        return CompletionResult(text=text, model=request.model, provider=self.name,
                                prompt_tokens=count_tokens(prompt), completion_tokens=completion,
                                cost_usd=0.0, latency_ms=(time.perf_counter() - started) * 1000, simulated=True)

    def context_window(self, model: str) -> int | None:
        return 8192

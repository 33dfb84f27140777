"""What one node execution does. Each runs as ONE Ray task (``execute_node``);
the run driver records it and decides what runs next.

A node task never raises for an application failure: it returns
``{"ok": False, "code", "message", "retryable"}`` so the driver can apply the
workflow's retry policy by error code. Ray itself retries the task when the
worker process or its node dies (``max_retries``).

Node ``data.configuration`` keys (templates allowed in every string, see
``troupe.engine.templates``):

- ``input``: ``value`` (default: the task's input) -> output.
- ``output``: ``value`` (default: the output of the node that activated it).
- ``agent`` (``data.agentId``): ``prompt`` (default: the activating output as
  JSON), ``system``, ``temperature``, ``maxTokens``, ``timeout``; output
  ``{text, model, tokens, cost, simulated}``.
- ``tool`` (``data.toolId``): ``input`` (object passed to the tool). Tool types:
  ``calculator`` (``input.expression``), ``http``/``api``/``webhook`` (tool
  ``configuration.endpoint``/``method``/``headers`` through the outbound guard).
- ``condition``: ``data.conditions`` (spec conditions); output ``{result}``.
- ``delay``: ``seconds`` (or ``ms``). Up to ``PARK_AFTER_SECONDS`` the node task
  sleeps; longer delays park the run (handled by the driver, holding no worker).
- ``webhook``: ``url``, ``method`` (POST), ``headers``, ``body``; sends
  ``Idempotency-Key: <task>:<node>:<iteration>``.
- ``email``: ``to``, ``subject``, ``body``; the idempotency key is recorded
  before sending so a resumed run never sends twice.
- ``loop``: handled by the driver: ``items`` (list or template) or ``while``
  (conditions), ``maxIterations`` (required, 1..10000); the body is the nodes on
  cycles back to the loop node (or an explicit ``body`` list of node ids).

Every node accepts ``timeout`` (seconds), ``retries`` (overrides the policy's
maxRetries) and, for tests, ``simulateFailAttempts``/``simulateError``/``sleep``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import ray

from troupe.engine import templates
from troupe.engine.calculator import calculate

PARK_AFTER_SECONDS = 2.0


def failure(code: str, message: str, *, retryable: bool = True) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message, "retryable": retryable}


def success(output: Any, **meta: Any) -> dict[str, Any]:
    return {"ok": True, "output": output, "meta": meta}


@ray.remote(num_cpus=0.05, max_retries=3, retry_exceptions=False)
def execute_node(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = _dispatch(spec)
    except Exception as exc:  # a bug or an unexpected library error is still a recorded failure
        result = failure("SYS_001", f"{type(exc).__name__}: {exc}", retryable=False)
    result.setdefault("meta", {})["durationMs"] = int((time.perf_counter() - started) * 1000)
    result["meta"]["pid"] = os.getpid()
    return result


def _injected(spec: dict[str, Any]) -> dict[str, Any] | None:
    config = spec.get("config") or {}
    if config.get("sleep"):
        time.sleep(float(config["sleep"]))
    if config.get("simulateError"):
        return failure(str(config["simulateError"]), "[simulated] injected failure")
    if spec.get("attempt", 0) < int(config.get("simulateFailAttempts", 0) or 0) and spec["type"] != "agent":
        return failure("SYS_003", f"[simulated] injected failure on attempt {spec.get('attempt', 0)}")
    return None


def _dispatch(spec: dict[str, Any]) -> dict[str, Any]:
    injected = _injected(spec)
    if injected is not None:
        return injected
    kind, config, context = spec["type"], spec.get("config") or {}, spec.get("context") or {}
    if kind == "input":
        return success(config["value"] if "value" in config else context.get("input"))
    if kind == "output":
        return success(config["value"] if "value" in config else context.get("prev"))
    if kind == "condition":
        try:
            return success({"result": templates.evaluate(spec.get("conditions") or [], context)})
        except ValueError as exc:
            return failure("BIZ_001", str(exc), retryable=False)
    if kind == "delay":
        seconds = _delay_seconds(config)
        time.sleep(seconds)
        return success({"delayedSeconds": seconds})
    if kind == "agent":
        return _agent(spec, config, context)
    if kind == "tool":
        return run_tool(spec.get("tool") or {}, config.get("input", {}), idempotency_key=spec.get("idempotencyKey"))
    if kind == "webhook":
        return _webhook(config, spec.get("idempotencyKey"))
    if kind == "email":
        return asyncio.run(_email(config, spec.get("idempotencyKey")))
    return failure("BIZ_001", f"node type {kind!r} cannot be executed", retryable=False)


def _delay_seconds(config: dict[str, Any]) -> float:
    if "ms" in config:
        return max(0.0, float(config["ms"]) / 1000)
    return max(0.0, float(config.get("seconds", config.get("duration", 0)) or 0))


def _agent(spec: dict[str, Any], config: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    from troupe.actors import handles

    agent_id = spec.get("agentId")
    if not agent_id:
        return failure("BIZ_001", "agent node has no agentId", retryable=False)
    prompt = config.get("prompt")
    if prompt is None:
        prev = context.get("prev")
        prompt = prev if isinstance(prev, str) else json.dumps(prev, default=str)
    timeout = float(spec.get("timeout") or 300)
    request = {"prompt": str(prompt), "system": config.get("system"), "temperature": config.get("temperature"),
               "maxTokens": config.get("maxTokens"), "taskId": spec.get("taskId"), "timeout": timeout,
               "extra": {"attempt": spec.get("attempt", 0),
                         **{k: config[k] for k in ("simulatedLatencyMs", "simulateFailAttempts", "simulateError")
                            if k in config}}}
    return handles.call_sync(handles.agent_name(agent_id), "complete", request, timeout=timeout + 5)


def run_tool(tool: dict[str, Any], tool_input: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
    """Executes a tool (also used by ``POST /api/tools/:id/test``)."""
    kind = str(tool.get("type", "")).lower()
    configuration = tool.get("configuration") or {}
    if kind == "calculator":
        expression = tool_input.get("expression") if isinstance(tool_input, dict) else tool_input
        try:
            return success({"result": calculate(expression)})
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError) as exc:
            return failure("BIZ_003", f"calculator: {exc}", retryable=False)
    if kind in ("http", "api", "webhook", "rest"):
        endpoint = configuration.get("endpoint")
        if not endpoint:
            return failure("BIZ_003", "tool has no configuration.endpoint", retryable=False)
        return _webhook({"url": endpoint, "method": configuration.get("method", "POST"),
                         "headers": configuration.get("headers") or {}, "body": tool_input,
                         "timeout": configuration.get("timeout")}, idempotency_key)
    return failure("BIZ_003", f"tool type {kind!r} has no runtime in this deployment", retryable=False)


def _webhook(config: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    try:
        from troupe.infra import outbound
    except ImportError:
        return failure("SYS_005", "outbound HTTP is not available in this deployment", retryable=False)
    url = config.get("url")
    if not url:
        return failure("BIZ_001", "webhook node has no url", retryable=False)
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return asyncio.run(_send_http(outbound, str(config.get("method", "POST")).upper(), str(url), headers,
                                  config.get("body")))


async def _send_http(outbound: Any, method: str, url: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
    try:
        response = await outbound.request(method, url, headers=headers,
                                           json=body if method not in ("GET", "DELETE") else None)
    except Exception as exc:
        code = str(getattr(exc, "code", "SYS_007"))
        return failure(code, f"{type(exc).__name__}: {exc}", retryable=bool(getattr(exc, "retryable", False)))
    status = int(response.status)
    text = response.text
    try:
        payload: Any = json.loads(text) if text else None
    except ValueError:
        payload = text
    if status >= 400:
        return failure("SYS_003", f"HTTP {status} from {url}", retryable=status >= 500 or status == 429)
    return success({"status": status, "body": payload})


async def _email(config: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    from troupe.infra.redis import close_redis, get_redis, rkey

    try:
        from troupe.infra.mail import send_mail
    except ImportError:
        return failure("SYS_005", "mail is not available in this deployment", retryable=False)
    to, subject, body = config.get("to"), config.get("subject", ""), config.get("body", "")
    if not to:
        return failure("BIZ_001", "email node has no recipient (to)", retryable=False)
    try:
        # Claim the key first: a resumed run that finds it claimed does not send again.
        if idempotency_key and not await get_redis().set(rkey("engine", "email", idempotency_key), "1",
                                                         nx=True, ex=7 * 86400):
            return success({"sent": False, "duplicate": True, "idempotencyKey": idempotency_key})
        for address in to if isinstance(to, list) else [to]:
            await send_mail(to=str(address), subject=str(subject), body=str(body),
                            headers={"X-Idempotency-Key": idempotency_key} if idempotency_key else None)
        return success({"sent": True, "to": to, "idempotencyKey": idempotency_key})
    except Exception as exc:
        return failure("SYS_003", f"mail: {exc}")
    finally:
        await close_redis()

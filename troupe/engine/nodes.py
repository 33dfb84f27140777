"""What one node execution does. Each runs as ONE Ray task (``execute_node``);
the run driver records it and decides what runs next.

A node task gets a ``NodeSpec`` and never raises for an application failure: it
returns a ``NodeResult`` (troupe.engine.contract) so the driver can apply the
workflow's retry policy by error code. Ray itself retries the task when the
worker process or its node dies (``max_retries``).

Node ``data.configuration`` keys (templates allowed in every string, see
``troupe.engine.templates``):

- ``input``: ``value`` (default: the task's input) -> output.
- ``output``: ``value`` (default: the output of the node that activated it).
- ``agent`` (handler in troupe.actors.agent_node: ``data.agentId``, through the
  AgentActor; or inline ``provider`` + ``model``, called from the node task, with ``systemPrompt``,
  ``apiKey``/``baseUrl`` and an optional ``rateLimit.requestsPerMinute``):
  ``prompt`` (default: the activating output as JSON), ``system``,
  ``temperature``, ``maxTokens``, ``timeout``; output
  ``{text, model, provider, tokens, cost, simulated}``.
- ``tool`` (``data.toolId``): ``input`` (object passed to the tool). Tool types:
  ``calculator`` (``input.expression``), ``http``/``api``/``webhook`` (tool
  ``configuration.endpoint``/``method``/``headers``/``authentication`` through
  the outbound guard).
- ``condition``: ``data.conditions`` (spec conditions); output ``{result}``.
- ``delay``: ``seconds`` (or ``ms``). Up to ``PARK_AFTER_SECONDS`` the node task
  sleeps; longer delays park the run (handled by the driver, holding no worker).
- ``webhook``: ``url``, ``method`` (POST), ``headers``, ``body``; sends
  ``Idempotency-Key: <task>:<node>:<iteration>``; a successful answer is kept in
  Redis under that key, so a re-run of the same node and iteration (Ray retry,
  recovery, ``retry`` with ``fromStep``) returns it without sending again.
- ``email``: ``to``, ``subject``, ``body``; the idempotency key is recorded
  before sending so a resumed run never sends twice.
- ``loop``: handled by the driver: ``items`` (list or template) or ``while``
  (conditions), ``maxIterations`` (required, 1..10000); the body is the nodes on
  cycles back to the loop node (or an explicit ``body`` list of node ids).

Sealed secrets (``enc:v1:...``: tool credentials and secret headers, workflow
``configuration.secrets`` referenced as ``{{secrets.name}}``) travel sealed to
this task and are opened only here, right before the outbound call of tool,
webhook and email nodes; every opened value is replaced by ``********`` in the
node's output and error message, and the driver records inputs with sealed
values masked.

Every node accepts ``timeout`` (seconds) and ``retries`` (overrides the policy's
maxRetries). Handlers are registered per type (``node_handler``); extra handler
modules load from ``TROUPE_NODE_PLUGINS`` (the test suite wraps types this way).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import ray

from troupe.engine import templates
from troupe.engine.calculator import calculate
from troupe.engine.contract import NodeResult, NodeSpec, ToolSpec

PARK_AFTER_SECONDS = 2.0
MASK = "********"
# Sealed values, whole or inside a rendered string ("Bearer enc:v1:...").
_SEALED = re.compile(r"enc:v1:[A-Za-z0-9+/]+={0,2}")
# Opened values shorter than this are not scrubbed from outputs (they would mangle any text).
_MIN_SCRUB = 4
SECRET_NODE_TYPES = frozenset({"tool", "webhook", "email"})


def mask_sealed(value: Any) -> Any:
    """``value`` with every sealed secret replaced by ``MASK`` (for recorded inputs)."""
    if isinstance(value, str):
        return _SEALED.sub(MASK, value) if "enc:v1:" in value else value
    if isinstance(value, dict):
        return {k: mask_sealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_sealed(v) for v in value]
    return value


class SecretError(Exception):
    pass


class Secrets:
    """Opens sealed values for one outbound call and scrubs them from what comes back."""

    def __init__(self) -> None:
        self.opened: set[str] = set()
        self._box: Any = None

    def _open_match(self, match: re.Match[str]) -> str:
        from troupe.security import SecretBox

        self._box = self._box or SecretBox()
        try:
            plain = self._box.open(match.group(0))
        except Exception as exc:  # wrong key or a corrupted value: never send the ciphertext
            raise SecretError("a sealed secret could not be opened (was TROUPE_SECRETS_KEY changed?)") from exc
        if len(plain) >= _MIN_SCRUB:
            self.opened.add(plain)
        return plain

    def open(self, value: Any) -> Any:
        if isinstance(value, str):
            return _SEALED.sub(self._open_match, value) if "enc:v1:" in value else value
        if isinstance(value, dict):
            return {k: self.open(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.open(v) for v in value]
        return value

    def scrub(self, value: Any) -> Any:
        if not self.opened:
            return value
        if isinstance(value, str):
            for plain in sorted(self.opened, key=len, reverse=True):
                value = value.replace(plain, MASK)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def scrub_result(self, result: NodeResult) -> NodeResult:
        if self.opened:
            result.output = self.scrub(result.output)
            result.message = self.scrub(result.message)
        return result


def failure(code: str, message: str, *, retryable: bool = True) -> NodeResult:
    return NodeResult.fail(code, message, retryable=retryable)


def success(output: Any, **meta: Any) -> NodeResult:
    return NodeResult.success(output, **meta)


# ---------------------------------------------------------------- handlers, one per node type
NodeHandler = Callable[[NodeSpec], NodeResult]
_HANDLERS: dict[str, NodeHandler] = {}
# Handlers owned by other packages, registered when first needed: the agent node lives with
# the agent actors (troupe.actors), so the engine never imports the actors that import it.
BUILTIN_HANDLER_MODULES = ("troupe.actors.agent_node",)
_plugins_loaded = False


def node_handler(*types: str) -> Callable[[NodeHandler], NodeHandler]:
    """Register the handler of these node types (a later registration replaces an earlier one)."""
    def register(fn: NodeHandler) -> NodeHandler:
        for type_ in types:
            _HANDLERS[type_] = fn
        return fn

    return register


def handler_for(type_: str) -> NodeHandler | None:
    """The handler of ``type_``. Modules named in ``TROUPE_NODE_PLUGINS`` (comma-separated)
    are imported first, once per process, so a deployment (or a test suite) can add or wrap
    handlers in every worker without touching this module."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        extra = [m.strip() for m in os.environ.get("TROUPE_NODE_PLUGINS", "").split(",")]
        for module in filter(None, [*BUILTIN_HANDLER_MODULES, *extra]):
            importlib.import_module(module)
    return _HANDLERS.get(type_)


@ray.remote(num_cpus=0.05, max_retries=3, retry_exceptions=False)
def execute_node(spec: NodeSpec) -> NodeResult:
    """One node attempt. Never raises for an application failure: a bug or an
    unexpected library error is still a recorded (non-retryable) failure."""
    started = time.perf_counter()
    handler = handler_for(spec.type)
    if handler is None:
        result = failure("BIZ_001", f"node type {spec.type!r} cannot be executed", retryable=False)
    else:
        try:
            result = handler(spec)
        except Exception as exc:
            result = failure("SYS_001", f"{type(exc).__name__}: {exc}", retryable=False)
    result.meta["durationMs"] = int((time.perf_counter() - started) * 1000)
    result.meta["pid"] = os.getpid()
    return result


@node_handler("input")
def _input(spec: NodeSpec) -> NodeResult:
    return success(spec.config["value"] if "value" in spec.config else spec.context.get("input"))


@node_handler("output")
def _output(spec: NodeSpec) -> NodeResult:
    return success(spec.config["value"] if "value" in spec.config else spec.context.get("prev"))


@node_handler("condition")
def _condition(spec: NodeSpec) -> NodeResult:
    try:
        return success({"result": templates.evaluate(spec.conditions or [], spec.context)})
    except ValueError as exc:
        return failure("BIZ_001", str(exc), retryable=False)


@node_handler("delay")
def _delay(spec: NodeSpec) -> NodeResult:
    seconds = delay_seconds(spec.config)
    time.sleep(seconds)
    return success({"delayedSeconds": seconds})


@node_handler("tool")
def _tool(spec: NodeSpec) -> NodeResult:
    if spec.tool is None:
        return failure("RES_001", "tool not found", retryable=False)
    return run_tool(spec.tool, spec.config.get("input", {}), idempotency_key=spec.idempotency_key)


@node_handler("webhook", "email")
def _outbound(spec: NodeSpec) -> NodeResult:
    secrets = Secrets()
    try:
        opened = secrets.open(spec.config)
    except SecretError as exc:
        return failure("BIZ_003", str(exc), retryable=False)
    if spec.type == "webhook":
        result = _webhook(opened, spec.idempotency_key, remember=True)
    else:
        result = asyncio.run(_email(opened, spec.idempotency_key))
    return secrets.scrub_result(result)


def delay_seconds(config: dict[str, Any]) -> float:
    if "ms" in config:
        return max(0.0, float(config["ms"]) / 1000)
    return max(0.0, float(config.get("seconds", config.get("duration", 0)) or 0))


def run_tool(tool: ToolSpec, tool_input: Any, *, idempotency_key: str | None = None) -> NodeResult:
    """Executes a tool (also used by ``POST /api/tools/:id/test``). Sealed credentials
    and headers are opened here, for this call only, and scrubbed from the result."""
    secrets = Secrets()
    try:
        opened = secrets.open({"configuration": tool.configuration or {}, "input": tool_input})
    except SecretError as exc:
        return failure("BIZ_003", str(exc), retryable=False)
    return secrets.scrub_result(_run_tool(tool, opened["configuration"], opened["input"], idempotency_key))


def _auth_headers(auth: Any) -> dict[str, str]:
    """Headers for a tool's ``authentication`` (credentials already opened):
    ``bearer``/``oauth2``: ``token`` (or ``accessToken``) as ``Authorization: Bearer``;
    ``basic``: ``username`` + ``password``; ``api_key``: ``apiKey`` (or ``key``) sent
    in the header named by ``header`` (default ``X-Api-Key``), or, without those,
    every credential entry sent as a header of that name."""
    if not isinstance(auth, dict):
        return {}
    kind = auth.get("type") or "none"
    creds = {str(k): str(v) for k, v in (auth.get("credentials") or {}).items() if v is not None}
    if kind == "none":
        return {}
    if kind in ("bearer", "oauth2"):
        token = creds.get("token") or creds.get("accessToken") or creds.get("access_token")
        if not token:
            raise ValueError(f"{kind} authentication needs credentials.token")
        return {"Authorization": f"Bearer {token}"}
    if kind == "basic":
        if "username" not in creds or "password" not in creds:
            raise ValueError("basic authentication needs credentials.username and credentials.password")
        pair = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    if kind == "api_key":
        key = creds.get("apiKey") or creds.get("api_key") or creds.get("key")
        if key:
            return {creds.get("header") or creds.get("headerName") or "X-Api-Key": key}
        headers = {k: v for k, v in creds.items() if k not in ("header", "headerName")}
        if not headers:
            raise ValueError("api_key authentication needs credentials.apiKey")
        return headers
    raise ValueError(f"authentication type {kind!r} is not supported")


def _run_tool(tool: ToolSpec, configuration: dict[str, Any], tool_input: Any,
              idempotency_key: str | None) -> NodeResult:
    kind = str(tool.type or "").lower()
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
        try:
            auth = _auth_headers(configuration.get("authentication"))
        except ValueError as exc:
            return failure("BIZ_003", f"tool {exc}", retryable=False)
        return _webhook({"url": endpoint, "method": configuration.get("method") or "POST",
                         "headers": {**(configuration.get("headers") or {}), **auth}, "body": tool_input,
                         "timeout": configuration.get("timeout")}, idempotency_key)
    return failure("BIZ_003", f"tool type {kind!r} has no runtime in this deployment", retryable=False)


def _webhook(config: dict[str, Any], idempotency_key: str | None, *, remember: bool = False) -> NodeResult:
    from troupe.infra import outbound
    url = config.get("url")
    if not url:
        return failure("BIZ_001", "webhook node has no url", retryable=False)
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    timeout = float(config["timeout"]) if config.get("timeout") else None
    send = _send_http(outbound, str(config.get("method", "POST")).upper(), str(url), headers, config.get("body"),
                      timeout)
    if remember and idempotency_key:
        return asyncio.run(_remembered(idempotency_key, send))
    return asyncio.run(send)


async def _remembered(idempotency_key: str, send: Any) -> NodeResult:
    """A webhook delivered once per key: a re-run returns the stored answer instead of sending."""
    from troupe.infra.redis import close_redis, get_redis, rkey

    key = rkey("engine", "webhook", idempotency_key)
    try:
        stored = await get_redis().get(key)
        if stored is not None:
            send.close()
            return success({**json.loads(stored), "duplicate": True}, duplicate=True)
        result = await send
        if result.ok:
            await get_redis().set(key, json.dumps(result.output, default=str), ex=7 * 86400)
        return result
    finally:
        await close_redis()


async def _send_http(outbound: Any, method: str, url: str, headers: dict[str, str], body: Any,
                     limit_s: float | None = None) -> NodeResult:
    try:
        response = await outbound.request(method, url, headers=headers, timeout=limit_s,
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


async def _email(config: dict[str, Any], idempotency_key: str | None) -> NodeResult:
    from troupe.infra.mail import send_mail
    from troupe.infra.redis import close_redis, get_redis, rkey
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

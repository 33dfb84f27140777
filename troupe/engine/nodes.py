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
- ``tool`` (``data.toolId``): ``input`` (object passed to the tool), run by the
  tool runtimes (``troupe.engine.tools``: one per tool type, schema-checked, rate
  limited and cached as the tool's configuration says).
- ``condition``: ``data.conditions`` (spec conditions); output ``{result}``.
- ``delay``: ``seconds`` (or ``ms``). Up to ``PARK_AFTER_SECONDS`` the node task
  sleeps; longer delays park the run (handled by the driver, holding no worker).
- ``webhook``: ``url``, ``method`` (POST), ``headers``, ``body``; sends
  ``Idempotency-Key: <task>:<node>:<iteration>``. Delivered once (``deliver_once``):
  a successful answer is kept in Redis under that key, so a re-run of the same
  node and iteration (Ray retry, recovery, ``retry`` with ``fromStep``) returns it
  without sending again. HTTP tool calls from a tool node are delivered the same way.
- ``email``: ``to``, ``subject``, ``body``; delivered once like a webhook: the
  message counts as sent only after the mail server accepted it (each recipient
  is remembered as it is accepted), so a retry after an SMTP failure sends.
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
import importlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import ray

from troupe.engine import templates
from troupe.engine.contract import NodeResult, NodeSpec

PARK_AFTER_SECONDS = 2.0
MASK = "********"
# Sealed values, whole or inside a rendered string ("Bearer enc:v1:...").
SEALED_PATTERN = _SEALED = re.compile(r"enc:v1:[A-Za-z0-9+/]+={0,2}")
# Opened values shorter than this are not scrubbed from outputs (they would mangle any text).
_MIN_SCRUB = 4
SECRET_NODE_TYPES = frozenset({"tool", "webhook", "email"})
# A delivered side effect's answer is remembered this long (re-runs return it).
REMEMBER_SECONDS = 7 * 86400
CLAIM_POLL_SECONDS = 0.05


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
    from troupe.engine.tools import ToolContext, run_tool

    return run_tool(spec.tool, spec.config.get("input", {}), context=ToolContext(
        company_id=spec.company_id, task_id=spec.task_id, idempotency_key=spec.idempotency_key,
        attempt=spec.attempt))


@node_handler("webhook", "email")
def _outbound(spec: NodeSpec) -> NodeResult:
    secrets = Secrets()
    try:
        opened = secrets.open(spec.config)
    except SecretError as exc:
        return failure("BIZ_003", str(exc), retryable=False)
    if spec.type == "webhook":
        result = _webhook(opened, spec.idempotency_key, attempt=spec.attempt, kind="webhook", scrub=secrets.scrub)
    else:
        result = asyncio.run(_email(opened, spec.idempotency_key, spec.attempt, scrub=secrets.scrub))
    return secrets.scrub_result(result)


def delay_seconds(config: dict[str, Any]) -> float:
    if "ms" in config:
        return max(0.0, float(config["ms"]) / 1000)
    return max(0.0, float(config.get("seconds", config.get("duration", 0)) or 0))


def _webhook(config: dict[str, Any], idempotency_key: str | None, *, attempt: int = 0, kind: str = "webhook",
             scrub: Callable[[Any], Any] | None = None) -> NodeResult:
    """One HTTP call through the outbound guard; with an idempotency key, delivered once."""
    from troupe.infra import outbound
    url = config.get("url")
    if not url:
        return failure("BIZ_001", "webhook node has no url", retryable=False)
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    timeout = float(config["timeout"]) if config.get("timeout") else None

    def send() -> Any:
        return _send_http(outbound, str(config.get("method", "POST")).upper(), str(url), headers,
                          config.get("body"), timeout)

    if not idempotency_key:
        return asyncio.run(send())
    limit = timeout or _default_outbound_timeout()
    return asyncio.run(_closing_redis(deliver_once(kind, idempotency_key, attempt, send, limit_s=limit,
                                                   scrub=scrub)))


def _default_outbound_timeout() -> float:
    from troupe.config import get_settings

    return get_settings().outbound_timeout.total_seconds()


async def _closing_redis(work: Any) -> NodeResult:
    """Run ``work`` on this task's own event loop and close its Redis client at the end."""
    from troupe.infra.redis import close_redis

    try:
        return await work
    finally:
        await close_redis()


async def deliver_once(kind: str, idempotency_key: str, attempt: int, send: Callable[[], Any], *,
                       limit_s: float, scrub: Callable[[Any], Any] | None = None) -> NodeResult:
    """Deliver a side effect (webhook, HTTP tool call, email) at most once per run, node and
    iteration (``idempotency_key``), and send it again only after a failed delivery.

    - A delivered answer is kept under ``engine:<kind>:<key>``: a re-run (Ray retry, recovery,
      a later attempt, ``retry`` from a step) returns it with ``duplicate: true``, unsent.
    - Before sending, the attempt takes one atomic claim, ``SET NX`` with a TTL on
      ``engine:<kind>:claim:<key>:<attempt>``: of two workers running the same attempt at
      once, exactly one sends; the other waits for its answer (or its failure, then claims).
    - A failed delivery releases the claim, so a retry really sends; a delivered one keeps
      it until the answer has been stored, closing the window between the two checks.
    Without Redis nothing is sent (SYS_005, retryable)."""
    from redis.exceptions import RedisError

    from troupe.infra.redis import get_redis, rkey

    done_key = rkey("engine", kind, idempotency_key)
    claim_key = rkey("engine", kind, "claim", idempotency_key, attempt)
    claim_ttl = int(limit_s) + 60  # outlives the send; a crashed worker's claim lapses after it
    deadline = time.monotonic() + limit_s + 5
    redis = get_redis()
    while True:
        try:
            stored = await redis.get(done_key)
            if stored is not None:
                return _delivered(stored)
            if await redis.set(claim_key, "sending", nx=True, ex=claim_ttl):
                break
        except RedisError as exc:
            return failure("SYS_005", f"{kind} not sent: its delivery cannot be claimed ({type(exc).__name__})")
        if time.monotonic() > deadline:
            return failure("SYS_006", f"{kind} not sent: another worker is still delivering attempt {attempt} "
                                      f"of {idempotency_key}")
        await asyncio.sleep(CLAIM_POLL_SECONDS)
    try:
        result: NodeResult = await send()
    except BaseException:
        await _release(redis, claim_key)
        raise
    if not result.ok:
        await _release(redis, claim_key)
        return result
    output = scrub(result.output) if scrub else result.output
    try:
        await redis.set(done_key, json.dumps(output, default=str), ex=REMEMBER_SECONDS)
    except RedisError:
        pass  # delivered: the claim still stops a second send of this attempt until it lapses
    return result


def _delivered(stored: str) -> NodeResult:
    try:
        answer = json.loads(stored)
    except ValueError:
        answer = None
    return success({**(answer if isinstance(answer, dict) else {}), "duplicate": True}, duplicate=True)


async def _release(redis: Any, claim_key: str) -> None:
    from redis.exceptions import RedisError

    try:
        await redis.delete(claim_key)
    except RedisError:
        pass  # the claim lapses with its TTL


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


async def _email(config: dict[str, Any], idempotency_key: str | None, attempt: int = 0,
                 scrub: Callable[[Any], Any] | None = None) -> NodeResult:
    from troupe.infra.mail import send_mail
    from troupe.infra.redis import close_redis, get_redis, rkey
    to, subject, body = config.get("to"), config.get("subject", ""), config.get("body", "")
    if not to:
        return failure("BIZ_001", "email node has no recipient (to)", retryable=False)
    recipients = [str(address) for address in (to if isinstance(to, list) else [to])]
    sent_key = rkey("engine", "email", "sent", idempotency_key) if idempotency_key else None

    async def send() -> NodeResult:
        # Recipients the mail server already accepted (an earlier, partly failed attempt) are skipped.
        try:
            accepted = set(await get_redis().smembers(sent_key)) if sent_key else set()
            for address in recipients:
                if address in accepted:
                    continue
                await send_mail(to=address, subject=str(subject), body=str(body),
                                headers={"X-Idempotency-Key": idempotency_key} if idempotency_key else None)
                if sent_key:
                    await get_redis().sadd(sent_key, address)
                    await get_redis().expire(sent_key, REMEMBER_SECONDS)
        except Exception as exc:
            return failure("SYS_003", f"mail: {exc}")
        return success({"sent": True, "to": to, "idempotencyKey": idempotency_key})

    try:
        if not idempotency_key:
            return await send()
        return await deliver_once("email", idempotency_key, attempt, send,
                                  limit_s=_default_outbound_timeout() * len(recipients), scrub=scrub)
    finally:
        await close_redis()

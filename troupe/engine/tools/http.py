"""``api`` (also ``http``/``rest``) and ``webhook`` tools: one request through the
outbound guard (troupe.infra.outbound) to ``configuration.endpoint``.

- ``api``: ``method`` (default POST), ``headers``, ``authentication``; the input is
  the JSON body (for GET/DELETE: the query parameters).
- ``webhook``: always ``POST`` of the input as JSON, signed with HMAC-SHA256 over
  ``"<timestamp>.<body>"`` (the exact bytes sent) with ``configuration.webhook.secret``:
  ``X-Troupe-Timestamp: <unix seconds>`` and
  ``X-Troupe-Signature: t=<unix seconds>,v1=<hex digest>`` (header name settable with
  ``configuration.webhook.signatureHeader``). Receivers recompute the digest, compare in
  constant time and reject stale timestamps.

Both send ``Idempotency-Key`` when the caller has one (a workflow node's run/node/iteration).
Output: ``{"status": <int>, "body": <JSON or text>}``; 4xx/5xx answers fail with SYS_003
(retryable for 5xx and 429)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

SIGNATURE_HEADER = "X-Troupe-Signature"
TIMESTAMP_HEADER = "X-Troupe-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Troupe-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def auth_headers(auth: Any) -> dict[str, str]:
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
            raise ToolFailure("BIZ_003", f"tool {kind} authentication needs credentials.token")
        return {"Authorization": f"Bearer {token}"}
    if kind == "basic":
        if "username" not in creds or "password" not in creds:
            raise ToolFailure("BIZ_003", "tool basic authentication needs credentials.username and .password")
        pair = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    if kind == "api_key":
        key = creds.get("apiKey") or creds.get("api_key") or creds.get("key")
        if key:
            return {creds.get("header") or creds.get("headerName") or "X-Api-Key": key}
        headers = {k: v for k, v in creds.items() if k not in ("header", "headerName")}
        if not headers:
            raise ToolFailure("BIZ_003", "tool api_key authentication needs credentials.apiKey")
        return headers
    raise ToolFailure("BIZ_003", f"authentication type {kind!r} is not supported")


def send(call: ToolCall, method: str, url: str, *, headers: dict[str, str], json_body: Any = None,
         content: bytes | None = None, params: dict[str, Any] | None = None) -> NodeResult:
    """One request; with the caller's idempotency key (a workflow's tool node) it is delivered
    at most once per run, node and iteration (troupe.engine.nodes.deliver_once)."""
    from troupe.engine.nodes import _closing_redis, deliver_once

    key = call.context.idempotency_key

    async def go() -> NodeResult:
        return await _request(method, url, headers=headers, json_body=json_body, content=content,
                              params=params, limit_s=call.timeout, idempotency_key=key)

    if not key:
        return asyncio.run(go())
    return asyncio.run(_closing_redis(deliver_once("tool", key, call.context.attempt, go, limit_s=call.timeout,
                                                   scrub=call.scrub)))


async def _request(method: str, url: str, *, headers: dict[str, str], json_body: Any, content: bytes | None,
                   params: dict[str, Any] | None, limit_s: float, idempotency_key: str | None) -> NodeResult:
    from troupe.infra import outbound

    try:
        response = await outbound.request(method, url, headers=headers, json=json_body, content=content,
                                          params=params, timeout=limit_s, idempotency_key=idempotency_key)
    except outbound.OutboundError as exc:
        return NodeResult.fail(str(exc.code), exc.message, retryable=exc.retryable)
    text = response.text
    try:
        payload: Any = json.loads(text) if text else None
    except ValueError:
        payload = text
    if response.status >= 400:
        return NodeResult.fail("SYS_003", f"HTTP {response.status} from {url}",
                               retryable=response.status >= 500 or response.status == 429)
    return NodeResult.success({"status": response.status, "body": payload})


def _endpoint(call: ToolCall) -> str:
    endpoint = call.configuration.get("endpoint")
    if not endpoint:
        raise ToolFailure("BIZ_003", f"{call.spec.type} tool has no configuration.endpoint")
    return str(endpoint)


@tool_runtime("api", "http", "rest")
def run_api(call: ToolCall) -> NodeResult:
    method = str(call.configuration.get("method") or "POST").upper()
    headers = {str(k): str(v) for k, v in (call.configuration.get("headers") or {}).items()}
    headers.update(auth_headers(call.configuration.get("authentication")))
    as_query = method in ("GET", "DELETE")
    params = {k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in call.input.items()} \
        if as_query and isinstance(call.input, dict) else None
    return send(call, method, _endpoint(call), headers=headers, params=params,
                json_body=None if as_query else call.input)


@tool_runtime("webhook")
def run_webhook(call: ToolCall) -> NodeResult:
    settings = call.section("webhook")
    secret = settings.get("secret")
    if not secret:
        raise ToolFailure("BIZ_003", "webhook tool has no configuration.webhook.secret to sign with")
    body = json.dumps(call.input, separators=(",", ":"), sort_keys=True, default=str).encode()
    timestamp = int(time.time())
    headers = {str(k): str(v) for k, v in (call.configuration.get("headers") or {}).items()}
    headers.update(auth_headers(call.configuration.get("authentication")))
    headers.update({"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
                    str(settings.get("signatureHeader") or SIGNATURE_HEADER): sign(str(secret), timestamp, body)})
    return send(call, "POST", _endpoint(call), headers=headers, content=body)

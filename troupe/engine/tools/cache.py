"""Result caching for ``configuration.caching`` (``enabled``, ``ttl`` seconds,
``strategy``):

- ``memory``: a bounded LRU in the calling process (one API replica or node worker);
- ``redis``: shared by the cluster (``SET ... EX ttl``);
- ``database``: the ``tool_cache`` table (``expires_at``), shared and durable.

Keys hash the tool id, its stored (sealed) configuration, the company and the
input, so a changed tool or another tenant never gets a stale or foreign entry.
Cached outputs are stored after secrets were scrubbed from them."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from troupe.engine.contract import ToolSpec
from troupe.engine.tools.registry import ToolContext

MEMORY_ENTRIES = 1024
_memory: OrderedDict[str, tuple[float, Any]] = OrderedDict()
_memory_lock = threading.Lock()


def key_for(spec: ToolSpec, context: ToolContext, tool_input: Any) -> str:
    doc = json.dumps({"tool": spec.id, "type": spec.type, "configuration": spec.configuration,
                      "schema": spec.schema, "company": context.company_id, "input": tool_input},
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def _dsn() -> str:
    from troupe.config import get_settings

    url = get_settings().database_url
    if not url:
        raise RuntimeError("the database cache needs DATABASE_URL")
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.split("+")[0] in ("postgres", "postgresql") else url


async def get(strategy: str, key: str) -> Any | None:
    """The cached output, or None (a cache that cannot be read is a miss)."""
    try:
        if strategy == "memory":
            with _memory_lock:
                entry = _memory.get(key)
                if entry is None:
                    return None
                if entry[0] < time.monotonic():
                    del _memory[key]
                    return None
                _memory.move_to_end(key)
                return json.loads(entry[1])
        if strategy == "redis":
            from troupe.infra.redis import get_redis, rkey

            raw = await get_redis().get(rkey("tool", "cache", key))
            return None if raw is None else json.loads(raw)["v"]
        if strategy == "database":
            import psycopg

            async with await psycopg.AsyncConnection.connect(_dsn(), autocommit=True) as conn:
                row = await (await conn.execute(
                    "SELECT value FROM tool_cache WHERE key = %s AND expires_at > now()",
                    (key,))).fetchone()
            return None if row is None else row[0]["v"]
    except Exception:  # a cache outage must not fail the tool: run it instead
        return None
    return None


async def put(strategy: str, key: str, tool_id: str, output: Any, ttl: int) -> None:
    if ttl <= 0:
        return
    encoded = json.dumps({"v": output}, default=str)
    try:
        if strategy == "memory":
            with _memory_lock:
                _memory[key] = (time.monotonic() + ttl, json.dumps(output, default=str))
                _memory.move_to_end(key)
                while len(_memory) > MEMORY_ENTRIES:
                    _memory.popitem(last=False)
        elif strategy == "redis":
            from troupe.infra.redis import get_redis, rkey

            await get_redis().set(rkey("tool", "cache", key), encoded, ex=ttl)
        elif strategy == "database":
            import psycopg

            async with await psycopg.AsyncConnection.connect(_dsn(), autocommit=True) as conn:
                await conn.execute(
                    "INSERT INTO tool_cache (key, tool_id, value, expires_at) VALUES "
                    "(%s, %s, %s::jsonb, now() + make_interval(secs => %s)) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    (key, tool_id, encoded, ttl))
                # Expired rows of this tool go as new ones arrive, so the table stays bounded.
                await conn.execute("DELETE FROM tool_cache WHERE tool_id = %s AND expires_at <= now()",
                                   (tool_id,))
    except Exception:  # a result that cannot be cached is still a result
        return

"""The two reads an AgentActor makes itself, on plain psycopg (the actor is lean: no
SQLAlchemy, no settings model), imported only by agents that have tools or knowledge:

- the agent's tools the caller may use: public, created by the calling user, or
  installed in the calling company;
- the best chunks of the agent's indexed knowledge for a query (Postgres full-text
  search over ``agent_knowledge_chunks``, see troupe.knowledge).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import psycopg
import ray

_conn: psycopg.AsyncConnection[Any] | None = None
_lock = asyncio.Lock()
CONNECT_TIMEOUT_S = 5
QUERY_TIMEOUT_MS = 5000
MAX_QUERY_WORDS = 32


def _conninfo() -> str:
    url = os.environ.get("DATABASE_URL") or ""
    if not url:
        raise RuntimeError("DATABASE_URL is not set in this process")
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.split("+")[0] in ("postgres", "postgresql") else url


async def _connection() -> psycopg.AsyncConnection[Any]:
    global _conn
    async with _lock:
        if _conn is None or _conn.closed or _conn.broken:
            _conn = await psycopg.AsyncConnection.connect(
                _conninfo(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                options=f"-c statement_timeout={QUERY_TIMEOUT_MS}")
        return _conn


async def _rows(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    global _conn
    try:
        conn = await _connection()
        cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
        return await cursor.fetchall()
    except psycopg.OperationalError:
        _conn = None  # a dropped connection is opened again by the next call
        raise


_TOOLS_SQL = """
SELECT t.id::text, t.name, coalesce(t.description, ''), t.type, coalesce(t.configuration, '{}'::jsonb),
       coalesce(t.schema, '{}'::jsonb)
FROM tools t
WHERE t.id = ANY(%(ids)s::uuid[]) AND coalesce(t.status, 'active') = 'active'
  AND (t.is_public OR t.created_by = %(user)s::uuid
       OR t.id IN (SELECT ct.tool_id FROM company_tools ct WHERE ct.company_id = %(company)s::uuid))
"""


async def usable_tools(tool_ids: list[str], *, company_id: str | None, user_id: str | None
                       ) -> list[tuple[str, str, str, str, dict[str, Any], dict[str, Any]]]:
    """(id, name, description, type, configuration, schema) of the tools the caller may use."""
    if not tool_ids:
        return []
    rows = await _rows(_TOOLS_SQL, {"ids": tool_ids, "user": user_id, "company": company_id})
    order = {tid: n for n, tid in enumerate(tool_ids)}
    return sorted(rows, key=lambda r: order.get(r[0], 0))  # type: ignore[return-value]


_SEARCH_SQL = """
SELECT source, content
FROM agent_knowledge_chunks, to_tsquery('english', %(query)s) q
WHERE agent_id = %(agent)s::uuid AND tsv @@ q
ORDER BY ts_rank_cd(tsv, q) DESC, position
LIMIT %(limit)s
"""


def tsquery_of(text: str) -> str:
    """Any of the text's words (OR): a question rarely repeats a passage word for word."""
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]{2,}", text)))[:MAX_QUERY_WORDS]
    return " | ".join(words)


async def best_chunks(agent_id: str, text: str, *, limit: int) -> list[dict[str, str]]:
    query = tsquery_of(text)
    if not query:
        return []
    rows = await _rows(_SEARCH_SQL, {"query": query, "agent": agent_id, "limit": limit})
    return [{"source": source, "content": content} for source, content in rows]


_STALE_SQL = """
SELECT EXISTS (SELECT 1 FROM agent_knowledge_chunks
               WHERE agent_id = %(agent)s::uuid AND kind = 'url'
                 AND indexed_at < now() - make_interval(secs => %(age)s))
"""


async def urls_older_than(agent_id: str, seconds: float) -> bool:
    rows = await _rows(_STALE_SQL, {"agent": agent_id, "age": seconds})
    return bool(rows and rows[0][0])


@ray.remote(num_cpus=0.05, max_retries=0)
def refresh_knowledge(agent_id: str) -> int:
    """Fetch the agent's URL sources again, in a worker (indexing needs the full stack)."""
    from troupe.db.session import dispose_engine, set_pool
    from troupe.knowledge.index import refresh_urls

    async def main() -> int:
        set_pool("none")
        try:
            return await refresh_urls(agent_id)
        finally:
            await dispose_engine()

    return asyncio.run(main())

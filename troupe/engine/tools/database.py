"""``database`` tools: one parameterised SQL statement on a PostgreSQL database.

``configuration.database``: ``connectionString`` (``postgresql://user:pass@host:port/db``;
stored sealed), ``query`` (optional fixed SQL with ``%(name)s`` placeholders filled from the
input object), ``readOnly`` (default true: the transaction is ``READ ONLY``),
``statementTimeoutMs`` (default 5000; ``SET LOCAL statement_timeout``) and ``maxRows``
(default 1000). Without a configured ``query`` the input is ``{"query": "...",
"params": {...} | [...]}``. Values are always bound by psycopg, never formatted into the SQL.

Only PostgreSQL is supported: any other scheme, a Unix socket or several hosts are refused.
The host goes through the outbound guard's address rules (a private or loopback database
needs ``TROUPE_OUTBOUND_ALLOWLIST``) and the connection is made to the vetted address.

Output: ``{"rows": [{column: value}], "rowCount": n, "truncated": bool}`` (``rowCount`` is
the affected row count for a statement without a result)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

DEFAULT_TIMEOUT_MS = 5000
DEFAULT_MAX_ROWS = 1000


def _params(dsn: str) -> dict[str, Any]:
    import psycopg.conninfo

    scheme = urlsplit(dsn).scheme.lower() if "://" in dsn else ""
    if scheme not in ("postgres", "postgresql"):
        raise ToolFailure("BIZ_003", "database tools support PostgreSQL only: connectionString must be a "
                          f"postgresql:// URL (got {scheme or 'no'} scheme)")
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ToolFailure("BIZ_003", f"database connectionString is not valid: {exc}") from exc
    host = str(params.get("host") or "")
    if not host or host.startswith("/") or "," in host or params.get("hostaddr"):
        raise ToolFailure("BIZ_003", "database connectionString needs exactly one TCP host (no sockets, "
                          "host lists or hostaddr)")
    return params


def _vetted_address(host: str, port: int) -> str:
    from troupe.infra.outbound import OutboundError, vet_host

    try:
        return asyncio.run(vet_host(host, port))[0]
    except OutboundError as exc:
        raise ToolFailure(str(exc.code), exc.message, retryable=exc.retryable) from exc


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@tool_runtime("database")
def run_database(call: ToolCall) -> NodeResult:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    settings = call.section("database")
    dsn = settings.get("connectionString")
    if not dsn:
        raise ToolFailure("BIZ_003", "database tool has no configuration.database.connectionString")
    if settings.get("query"):
        query, params = str(settings["query"]), call.input
    elif isinstance(call.input, dict) and isinstance(call.input.get("query"), str):
        query, params = call.input["query"], call.input.get("params")
    else:
        raise ToolFailure("VAL_001", "database tool input needs a query (the tool configures none)")
    if params is not None and not isinstance(params, dict | list):
        raise ToolFailure("VAL_001", "database query params must be an object or an array")
    conn_params = _params(str(dsn))
    port = int(conn_params.get("port") or 5432)
    address = _vetted_address(str(conn_params["host"]), port)
    timeout_ms = int(settings.get("statementTimeoutMs") or DEFAULT_TIMEOUT_MS)
    max_rows = int(settings.get("maxRows") or DEFAULT_MAX_ROWS)
    read_only = settings.get("readOnly", True) is not False
    try:
        with psycopg.connect(**{**conn_params, "hostaddr": address, "port": port},
                             connect_timeout=max(2, int(call.timeout)), row_factory=dict_row) as conn:
            conn.read_only = read_only  # psycopg opens the transaction READ ONLY
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms)))
                cursor.execute(query, params or None)
                if cursor.description is None:
                    return NodeResult.success({"rows": [], "rowCount": cursor.rowcount, "truncated": False})
                rows = cursor.fetchmany(max_rows + 1)
    except psycopg.errors.QueryCanceled as exc:
        return NodeResult.fail("SYS_006", f"database statement exceeded {timeout_ms} ms: {exc}", retryable=False)
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        return NodeResult.fail("BIZ_003", f"database tool is read-only: {exc}".strip(), retryable=False)
    except psycopg.OperationalError as exc:
        return NodeResult.fail("SYS_007", f"database connection failed: {exc}".strip(), retryable=True)
    except psycopg.Error as exc:
        return NodeResult.fail("BIZ_003", f"database: {exc}".strip(), retryable=False)
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return NodeResult.success({"rows": _jsonable(rows), "rowCount": len(rows), "truncated": truncated})

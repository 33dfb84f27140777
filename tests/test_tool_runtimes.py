"""Every tool type's runtime (troupe.engine.tools) against local targets: the HTTP test
route and a workflow's tool node run the same code. Schemas are checked on the way in and
out; rate limits and caches follow ``configuration``; the code sandbox holds its limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import sysconfig
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from tests.utils.engine import chain, make_company, make_workflow, node, run_workflow, wait_status
from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.stub_http import StubServer

SIGNING_SECRET = "whsec-3c1f0e9b7a5d4e21"
SUM_CODE = 'def run(input):\n    return {"sum": input["a"] + input["b"]}'
PAGE = """<html><head><title>Troupe news</title><style>.x{color:red}</style></head><body>
<h1>Release</h1><script>var hidden = 1;</script>
<div class="post"><p>Tools run <b>everywhere</b>.</p></div>
<a href="/about">About</a> <a href="https://example.org/x">Elsewhere</a></body></html>"""


@pytest.fixture
async def stub():
    server = StubServer()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"received": json.loads(body) if body else None, "query": dict(request.query)})

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    server.route("POST", "/hook", echo)
    server.route("POST", "/api", echo)
    server.route("GET", "/api", echo)
    server.route("GET", "/page", page)
    await server.start()
    yield server
    await server.stop()


async def create_tool(client, who, type_: str, configuration: dict, schema: dict | None = None,
                      status: int = 201):
    body = {"name": f"{type_}-{uuid.uuid4().hex[:6]}", "description": f"a {type_} tool", "type": type_,
            "category": "utility", "configuration": configuration, "schema": schema or {}}
    response = await client.post("/api/tools", json=body, headers=who.headers)
    return assert_ok(response, 201) if status == 201 else response


async def call_tool(client, who, tool_id: str, tool_input, **extra) -> dict:
    return assert_ok(await client.post(f"/api/tools/{tool_id}/test", json={"input": tool_input, **extra},
                                       headers=who.headers))


@pytest.fixture
async def pg_tcp(stack):
    """The test database reached over TCP on 127.0.0.1 (a database tool's connection is TCP):
    the embedded server listens on a Unix socket only, so a byte pipe stands in front of it."""
    from psycopg.conninfo import conninfo_to_dict

    from troupe.config import get_settings

    params = conninfo_to_dict(get_settings().database_url.replace("postgresql+psycopg://", "postgresql://"))
    host = str(params.get("host") or "")
    if not host.startswith("/"):  # already TCP (an external DATABASE_URL)
        yield (f"postgresql://{params.get('user', '')}:{params.get('password', '')}@{host}:"
               f"{params.get('port') or 5432}/{params['dbname']}")
        return
    socket_path = f"{host}/.s.PGSQL.{params.get('port') or 5432}"

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"postgresql://{params.get('user') or 'postgres'}:{params.get('password') or ''}@127.0.0.1:{port}/" \
          f"{params['dbname']}"
    server.close()


# ---------------------------------------------------------------------------------------- code


async def test_code_tool_answers_the_return_value_through_the_test_route(client, user):
    tool = await create_tool(client, user, "code", {"code": SUM_CODE}, {
        "input": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                  "required": ["a", "b"]},
        "output": {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]}})
    result = await call_tool(client, user, tool["id"], {"a": 2, "b": 3})
    assert result["success"] is True, result
    assert result["output"] == {"sum": 5}
    # The input is checked against schema.input before anything runs.
    assert_error(await client.post(f"/api/tools/{tool['id']}/test", json={"input": {"a": 2}},
                                   headers=user.headers), 422, "VAL_001", field="input")


async def test_code_tool_needs_code_and_refuses_other_types_settings(client, user):
    response = await create_tool(client, user, "code", {}, status=422)
    assert_error(response, 422, "VAL_001", field="configuration.code")
    response = await create_tool(client, user, "api", {"code": SUM_CODE}, status=422)
    assert_error(response, 422, "VAL_001", field="configuration.code")


async def test_output_is_validated_against_schema_output(client, user):
    tool = await create_tool(client, user, "code", {"code": 'def run(input):\n    return {"sum": "five"}'},
                             {"output": {"type": "object", "properties": {"sum": {"type": "number"}}}})
    result = await call_tool(client, user, tool["id"], {})
    assert result["success"] is False
    assert result["error"]["code"] == "BIZ_003" and "schema.output" in result["error"]["message"]


SANDBOX_CASES = [
    ("host file", 'def run(input):\n    return open("/etc/passwd").read()', "no access to '/etc/passwd'"),
    ("proc environ", 'def run(input):\n    return open("/proc/1/environ").read()', "no access"),
    ("socket", 'import socket\ndef run(input):\n    return 1', "module 'socket' is not available"),
    ("raw socket", 'def run(input):\n    import _socket\n    return _socket.socket()', "not available"),
    ("process", 'def run(input):\n    import os\n    return os.system("id")', "os.system is not allowed"),
    ("listing", 'def run(input):\n    import os\n    return os.listdir("/")', "no listing"),
]


@pytest.mark.parametrize(("what", "code", "refusal"), SANDBOX_CASES, ids=[c[0] for c in SANDBOX_CASES])
async def test_code_sandbox_refuses_files_network_and_processes(what, code, refusal):
    from troupe.engine.tools.code import run_code

    result = await asyncio.to_thread(run_code, code, {}, timeout=10)
    assert result.ok is False, (what, result)
    assert refusal in result.message, (what, result.message)


async def test_code_sandbox_has_an_empty_environment():
    import os

    from troupe.engine.tools.code import run_code

    os.environ["TROUPE_SANDBOX_CANARY"] = "server-secret-value"
    try:
        result = await asyncio.to_thread(run_code, 'import os\ndef run(input):\n    return dict(os.environ)', {})
    finally:
        del os.environ["TROUPE_SANDBOX_CANARY"]
    assert result.ok and result.output == {}


async def test_the_network_namespace_alone_reaches_nothing(stub):
    """The layer under the audit hook: a process in the sandbox's namespace, even one
    allowed sockets, has only a loopback that is down and cannot reach a local server."""
    import subprocess
    import sys

    from troupe.engine.tools.code import network_isolation

    prefix = network_isolation()
    if not prefix:
        pytest.skip("this host permits no network namespace; the audit hook is the network barrier")
    probe = ("import socket\nprint(socket.if_nameindex())\n"
             f"try:\n    socket.create_connection(('127.0.0.1', {stub.port}), timeout=2)\n    print('reached')\n"
             "except OSError as exc:\n    print('unreachable', exc.errno)\n")
    done = await asyncio.to_thread(subprocess.run, [*prefix, sys.executable, "-I", "-c", probe],
                                   capture_output=True, text=True, timeout=20, env={})
    assert done.returncode == 0, done.stderr
    interfaces, outcome = done.stdout.strip().splitlines()
    assert interfaces == "[(1, 'lo')]"
    assert outcome.startswith("unreachable"), done.stdout


async def test_code_sandbox_stops_at_cpu_memory_time_and_output_limits():
    from troupe.engine.tools.code import run_code

    cpu = await asyncio.to_thread(run_code, 'def run(input):\n    while True:\n        pass', {},
                                  cpu_seconds=1, timeout=20)
    assert not cpu.ok and cpu.meta["limit"] == "cpu", cpu
    memory = await asyncio.to_thread(run_code, 'def run(input):\n    return len(bytearray(2 * 1024 ** 3))', {},
                                     memory_mb=128)
    assert not memory.ok and memory.meta["limit"] == "memory", memory
    wall = await asyncio.to_thread(run_code, 'import time\ndef run(input):\n    time.sleep(60)', {}, timeout=1.5)
    assert not wall.ok and wall.meta["limit"] == "time" and wall.code == "SYS_006", wall
    output = await asyncio.to_thread(run_code, 'def run(input):\n    return "x" * 200000', {}, output_bytes=4096)
    assert not output.ok and output.meta["limit"] == "output", output
    raised = await asyncio.to_thread(run_code, 'def run(input):\n    raise ValueError("bad input")', {})
    assert not raised.ok and "ValueError: bad input" in raised.message


# ---------------------------------------------------------------------------------------- api, webhook


async def test_webhook_tool_signs_each_call_with_hmac(client, user, stub):
    tool = await create_tool(client, user, "webhook", {"endpoint": f"{stub.url}/hook",
                                                       "webhook": {"secret": SIGNING_SECRET}})
    assert tool["configuration"]["webhook"]["secret"] == "********"
    result = await call_tool(client, user, tool["id"], {"event": "deployed", "version": 3})
    assert result["success"] is True, result
    assert result["output"]["body"]["received"] == {"event": "deployed", "version": 3}
    received = next(r for r in stub.received if r.path == "/hook")
    timestamp = received.headers["x-troupe-timestamp"]
    expected = hmac.new(SIGNING_SECRET.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256)
    assert received.headers["x-troupe-signature"] == f"t={timestamp},v1={expected.hexdigest()}"
    # A webhook tool cannot be created unsigned, nor with a short secret.
    assert_error(await create_tool(client, user, "webhook", {"endpoint": f"{stub.url}/hook"}, status=422),
                 422, "VAL_001", field="configuration.webhook")
    short = await create_tool(client, user, "webhook", {"endpoint": f"{stub.url}/hook", "webhook": {"secret": "x"}},
                              status=422)
    assert short.status_code == 422


async def test_api_tool_get_sends_the_input_as_query(client, user, stub):
    tool = await create_tool(client, user, "api", {"endpoint": f"{stub.url}/api", "method": "GET"})
    result = await call_tool(client, user, tool["id"], {"city": "Paris"})
    assert result["success"] is True, result
    assert result["output"] == {"status": 200, "body": {"received": None, "query": {"city": "Paris"}}}


# ---------------------------------------------------------------------------------------- database


async def test_database_tool_runs_parameterised_read_only_sql_with_caps(client, user, pg_tcp):
    sums = await create_tool(client, user, "database", {"database": {
        "connectionString": pg_tcp, "query": "SELECT %(a)s::int + %(b)s::int AS sum"}})
    assert sums["configuration"]["database"]["connectionString"] == "********"
    result = await call_tool(client, user, sums["id"], {"a": 2, "b": 3})
    assert result["success"] is True, result
    assert result["output"] == {"rows": [{"sum": 5}], "rowCount": 1, "truncated": False}
    # An injection attempt is just a value.
    injected = await call_tool(client, user, sums["id"], {"a": "1; DROP TABLE users", "b": 1})
    assert injected["success"] is False and injected["error"]["code"] == "BIZ_003"

    adhoc = await create_tool(client, user, "database", {"database": {
        "connectionString": pg_tcp, "maxRows": 10, "statementTimeoutMs": 300}})
    capped = await call_tool(client, user, adhoc["id"], {"query": "SELECT generate_series(1, 50) AS n"})
    assert capped["output"]["rowCount"] == 10 and capped["output"]["truncated"] is True
    write = await call_tool(client, user, adhoc["id"], {"query": "CREATE TEMP TABLE tool_probe (a int)"})
    assert write["success"] is False and "read-only" in write["error"]["message"], write
    slow = await call_tool(client, user, adhoc["id"], {"query": "SELECT pg_sleep(3)"})
    assert slow["success"] is False and slow["error"]["code"] == "SYS_006", slow

    writable = await create_tool(client, user, "database", {"database": {
        "connectionString": pg_tcp, "readOnly": False}})
    created = await call_tool(client, user, writable["id"], {"query": "CREATE TEMP TABLE tool_probe (a int)"})
    assert created["success"] is True, created


async def test_database_tool_is_postgres_only_and_behind_the_outbound_guard(client, user):
    mysql = await create_tool(client, user, "database", {"database": {"connectionString": "mysql://u:p@h/db"}},
                              status=422)
    assert_error(mysql, 422, "VAL_001")
    metadata = await create_tool(client, user, "database", {"database": {
        "connectionString": "postgresql://u:p@169.254.169.254:5432/db", "query": "SELECT 1"}})
    refused = await call_tool(client, user, metadata["id"], {})
    assert refused["success"] is False and "destination not allowed" in refused["error"]["message"], refused
    private = await create_tool(client, user, "database", {"database": {
        "connectionString": "postgresql://u:p@10.255.255.1:5432/db", "query": "SELECT 1"}})
    refused = await call_tool(client, user, private["id"], {})
    assert refused["success"] is False and "private" in refused["error"]["message"], refused


# ---------------------------------------------------------------------------------------- file


async def test_file_tool_reads_and_writes_in_the_company_area_only(client, user, other_user):
    company = await make_company(user.id)
    tool = await create_tool(client, user, "file", {"file": {"root": "reports"}})
    wrote = await call_tool(client, user, tool["id"], {"operation": "write", "path": "q1/summary.txt",
                                                      "content": "revenue up"}, companyId=company)
    assert wrote["success"] is True and wrote["output"] == {"path": "q1/summary.txt", "size": 10}, wrote
    read = await call_tool(client, user, tool["id"], {"operation": "read", "path": "q1/summary.txt"},
                           companyId=company)
    assert read["output"]["content"] == "revenue up"
    listed = await call_tool(client, user, tool["id"], {"operation": "list", "path": "q1"}, companyId=company)
    assert [f["name"] for f in listed["output"]["files"]] == ["summary.txt"]

    from troupe.infra.storage import get_storage

    stored = get_storage().path(f"companies/{uuid.UUID(company).hex}/files/reports/q1/summary.txt")
    assert await asyncio.to_thread(Path(stored).read_text) == "revenue up"
    for path in ("../other/x.txt", "/etc/passwd", "q1/../../x", "..\\x"):
        refused = await call_tool(client, user, tool["id"], {"operation": "read", "path": path}, companyId=company)
        assert refused["success"] is False and refused["error"]["code"] == "VAL_001", (path, refused)
    missing = await call_tool(client, user, tool["id"], {"operation": "read", "path": "q1/summary.txt"})
    assert missing["success"] is False and "company" in missing["error"]["message"]
    # Another tenant's company is not a storage area the caller may use.
    foreign = await make_company(other_user.id)
    response = await client.post(f"/api/tools/{tool['id']}/test", headers=user.headers, json={
        "input": {"operation": "read", "path": "q1/summary.txt"}, "companyId": foreign})
    assert response.status_code in (403, 404), response.json()
    shutil.rmtree(Path(stored).parents[2], ignore_errors=True)


# ---------------------------------------------------------------------------------------- scraper


async def test_scraper_extracts_text_links_and_a_css_selected_part(client, user, stub):
    tool = await create_tool(client, user, "scraper", {"endpoint": f"{stub.url}/page",
                                                       "scraper": {"selector": "div.post p"}})
    result = await call_tool(client, user, tool["id"], {})
    assert result["success"] is True, result
    out = result["output"]
    assert out["title"] == "Troupe news" and out["status"] == 200
    assert "Tools run everywhere ." in out["text"] or "Tools run everywhere." in out["text"]
    assert "hidden" not in out["text"] and "color" not in out["text"]
    assert out["links"] == [{"href": f"{stub.url}/about", "text": "About"},
                            {"href": "https://example.org/x", "text": "Elsewhere"}]
    assert [s["text"] for s in out["selected"]] == ["Tools run everywhere ."] or \
        [s["text"] for s in out["selected"]] == ["Tools run everywhere."]
    blocked = await call_tool(client, user, tool["id"], {"url": "http://10.255.255.1/"})
    assert blocked["success"] is False and "destination not allowed" in blocked["error"]["message"]


# ---------------------------------------------------------------------------------------- translator


async def test_translator_goes_through_the_configured_provider(client, user):
    tool = await create_tool(client, user, "translator", {"translator": {"provider": "simulated",
                                                                         "targetLanguage": "French"}})
    result = await call_tool(client, user, tool["id"], {"text": "Good morning"})
    assert result["success"] is True, result
    out = result["output"]
    # The offline provider is labelled, never passed off as a translation.
    assert out["simulated"] is True and out["text"].startswith("[simulated]")
    assert out["targetLanguage"] == "French" and out["provider"] == "simulated"
    no_target = await create_tool(client, user, "translator", {"translator": {"provider": "simulated"}})
    failed = await call_tool(client, user, no_target["id"], {"text": "hi"})
    assert failed["success"] is False and "targetLanguage" in failed["error"]["message"]


# ---------------------------------------------------------------------------------------- custom


@pytest.fixture
def word_count_plugin():
    """A real distribution with a ``troupe.tools`` entry point, installed into the
    environment the servers run from (and removed afterwards)."""
    name = f"troupe_test_plugin_{uuid.uuid4().hex[:8]}"
    site = Path(sysconfig.get_paths()["purelib"])
    module = site / f"{name}.py"
    dist = site / f"{name}-1.0.dist-info"
    module.write_text("def word_count(input, settings, context):\n"
                      "    return {'words': len(input['text'].split()), 'unit': settings.get('unit'),\n"
                      "            'company': context.company_id}\n")
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[troupe.tools]\n{name} = {name}:word_count\n")
    (dist / "RECORD").write_text("")
    try:
        yield name
    finally:
        module.unlink(missing_ok=True)
        shutil.rmtree(dist, ignore_errors=True)


async def test_custom_tool_runs_an_entry_point_plugin(client, user, word_count_plugin):
    tool = await create_tool(client, user, "custom", {"plugin": {"name": word_count_plugin,
                                                                 "settings": {"unit": "words"}}})
    result = await call_tool(client, user, tool["id"], {"text": "one two three"})
    assert result["success"] is True, result
    assert result["output"] == {"words": 3, "unit": "words", "company": None}
    unknown = await create_tool(client, user, "custom", {"plugin": {"name": "no-such-plugin"}})
    missing = await call_tool(client, user, unknown["id"], {"text": "x"})
    assert missing["success"] is False and "no tool plugin 'no-such-plugin'" in missing["error"]["message"]


# ---------------------------------------------------------------------------------------- limits, caches


async def test_rate_limit_per_tool(client, user):
    tool = await create_tool(client, user, "code", {"code": SUM_CODE, "rateLimit": {"requests": 2, "window": 60}})
    for _ in range(2):
        assert (await call_tool(client, user, tool["id"], {"a": 1, "b": 1}))["success"] is True
    limited = await call_tool(client, user, tool["id"], {"a": 1, "b": 1})
    assert limited["success"] is False and limited["error"]["code"] == "SYS_004", limited


@pytest.mark.parametrize("strategy", ["redis", "database"])
async def test_cached_results_skip_the_call_until_the_ttl(client, user, stub, strategy):
    tool = await create_tool(client, user, "api", {"endpoint": f"{stub.url}/api", "method": "POST",
                                                   "caching": {"enabled": True, "ttl": 60, "strategy": strategy}})
    first = await call_tool(client, user, tool["id"], {"n": 1})
    second = await call_tool(client, user, tool["id"], {"n": 1})
    other = await call_tool(client, user, tool["id"], {"n": 2})
    assert first["output"] == second["output"] and other["output"]["body"]["received"] == {"n": 2}
    assert sum(1 for r in stub.received if r.path == "/api") == 2  # the repeat was answered from the cache


async def test_memory_cache_and_ttl_in_process():
    from troupe.engine.contract import ToolSpec
    from troupe.engine.tools import run_tool

    code = 'import random\ndef run(input):\n    return {"r": random.random()}'
    spec = ToolSpec(id=str(uuid.uuid4()), type="code", configuration={
        "code": code, "caching": {"enabled": True, "ttl": 1, "strategy": "memory"}})
    first = await asyncio.to_thread(run_tool, spec, {})
    again = await asyncio.to_thread(run_tool, spec, {})
    assert first.ok and again.output == first.output and again.meta.get("cached") is True
    await asyncio.sleep(1.2)
    later = await asyncio.to_thread(run_tool, spec, {})
    assert later.ok and later.output != first.output


# ---------------------------------------------------------------------------------------- workflows


async def test_a_workflow_tool_node_runs_the_code_runtime(client, user):
    company = await make_company(user.id)
    tool = await create_tool(client, user, "code", {"code": SUM_CODE})
    workflow = await make_workflow(company, user.id, [
        node("in", "input"), node("add", "tool", toolId=tool["id"], input={"a": "{{input.a}}", "b": 3}),
        node("out", "output")], chain("in", "add", "out"))
    task = await wait_status(client, user, await run_workflow(client, user, company, workflow, {"a": 2}))
    assert task["status"] == "completed", task.get("error")
    assert task["output"] == {"sum": 5}

"""GET, change one field, PUT the whole answer back (issue 11, item 3), over real HTTP.

Server-owned fields that come back with the object (ids, timestamps, counters,
embedded objects, masked secrets) are ignored; the change is stored, every other
field keeps its value, sealed secrets are kept, and a field that is in neither the
answer nor the update body is still refused with VAL_001 naming it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from tests.utils.ca_helpers import make_company
from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.tw_helpers import fetch

SECRET = "round-trip-secret-7"
# Moves on every write, or is computed afresh on every read.
VOLATILE = {"updatedAt", "metrics", "lastActivityAt"}


def _without(data: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


async def _put_back(client, who, path: str, change: Callable[[dict[str, Any]], None]) -> tuple[dict, dict]:
    """GET ``path``, apply ``change`` to the whole answer, PUT it back; the answer before and a fresh GET after."""
    before = assert_ok(await client.get(path, headers=who.headers))
    sent = copy.deepcopy(before)
    change(sent)
    assert_ok(await client.put(path, json=sent, headers=who.headers))
    after = assert_ok(await client.get(path, headers=who.headers))
    return before, after


async def _refuses_unknown(client, who, path: str) -> None:
    answer = assert_ok(await client.get(path, headers=who.headers))
    assert_error(await client.put(path, json={**answer, "notAField": 1}, headers=who.headers), 422, "VAL_001",
                 field="notAField")


async def test_company_round_trip_keeps_members_and_ignores_server_fields(client, user, other_user):
    company = await make_company(client, user, settings={"maxAgents": 4})
    path = f"/api/companies/{company['id']}"
    assert_ok(await client.put(path, headers=user.headers,
                               json={"addMembers": [{"userId": other_user.id, "role": "viewer"}]}))

    def change(data):
        data["name"] = "Renamed Co"
        # A changed server-owned value is ignored too (documented in the README).
        data["ownerId"] = other_user.id
        data["settings"]["billing"]["currentUsage"] = 999

    before, after = await _put_back(client, user, path, change)
    assert after["name"] == "Renamed Co" and after["ownerId"] == user.id
    assert after["settings"]["billing"]["currentUsage"] == before["settings"]["billing"]["currentUsage"]
    # teamMembers came back as bare ids: the viewer stays a viewer.
    assert {m["userId"]: m["role"] for m in after["members"]}[other_user.id] == "viewer"
    assert _without(after, VOLATILE | {"name"}) == _without(before, VOLATILE | {"name"})
    await _refuses_unknown(client, user, path)


async def test_agent_round_trip_keeps_the_sealed_key(client, user):
    body = {"name": f"Agent {uuid.uuid4().hex[:6]}", "description": "Answers questions", "type": "conversational",
            "model": "gpt-4o-mini", "provider": "openai", "configuration": {"apiKey": SECRET}}
    agent = assert_ok(await client.post("/api/agents", json=body, headers=user.headers), 201)
    path = f"/api/agents/{agent['id']}"
    sealed = (await fetch("Agent", agent["id"])).configuration["apiKey"]

    def change(data):
        data["description"] = "Answers questions politely"
        data["rating"] = 5  # server-owned

    before, after = await _put_back(client, user, path, change)
    assert before["configuration"]["apiKey"] == "********"
    assert after["description"] == "Answers questions politely" and after["rating"] == before["rating"]
    assert (await fetch("Agent", agent["id"])).configuration["apiKey"] == sealed
    assert _without(after, VOLATILE | {"description"}) == _without(before, VOLATILE | {"description"})
    await _refuses_unknown(client, user, path)


async def test_tool_round_trip_keeps_secrets(client, user):
    from tests.test_tools import SECRET as TOOL_SECRET
    from tests.test_tools import tool_body
    from troupe.security import SecretBox

    tool = assert_ok(await client.post("/api/tools", json=tool_body(), headers=user.headers), 201)
    path = f"/api/tools/{tool['id']}"

    def change(data):
        data["description"] = "Weather by city, in Celsius"
        data["downloads"] = 10_000  # server-owned

    before, after = await _put_back(client, user, path, change)
    assert after["description"] == "Weather by city, in Celsius" and after["downloads"] == before["downloads"]
    row = await fetch("Tool", tool["id"])
    assert SecretBox().open(row.configuration["authentication"]["credentials"]["token"]) == TOOL_SECRET
    assert _without(after, VOLATILE | {"description"}) == _without(before, VOLATILE | {"description"})
    await _refuses_unknown(client, user, path)


async def test_workflow_round_trip_keeps_secrets_and_schedule(client, user):
    from tests.test_workflows import body as workflow_body

    company = await make_company(client, user)
    created = assert_ok(await client.post(
        "/api/workflows", headers=user.headers,
        json=workflow_body(company["id"], schedule={"enabled": True, "cron": "0 * * * *", "timezone": "UTC"})), 201)
    path = f"/api/workflows/{created['id']}"
    sealed = (await fetch("Workflow", created["id"])).configuration["secrets"]["apiKey"]

    def change(data):
        data["description"] = "edited"

    before, after = await _put_back(client, user, path, change)
    assert before["schedule"]["nextRun"] and before["configuration"]["secrets"] == {"apiKey": "********"}
    assert after["description"] == "edited"
    assert (await fetch("Workflow", created["id"])).configuration["secrets"]["apiKey"] == sealed
    assert _without(after, VOLATILE | {"description"}) == _without(before, VOLATILE | {"description"})
    await _refuses_unknown(client, user, path)


async def test_task_round_trip(client, user):
    from tests.test_workflows import body as workflow_body

    company = await make_company(client, user)
    workflow = assert_ok(await client.post("/api/workflows", json=workflow_body(company["id"]), headers=user.headers),
                         201)
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "Nightly", "type": "workflow", "companyId": company["id"], "workflowId": workflow["id"],
        "input": {"topic": "x"}, "tags": ["n"]}), 201)
    path = f"/api/tasks/{task['id']}"

    def change(data):
        data["priority"] = "high"
        data["progress"] = 50  # server-owned

    before, after = await _put_back(client, user, path, change)
    assert after["priority"] == "high" and after["progress"] == before["progress"] == 0
    assert _without(after, VOLATILE | {"priority"}) == _without(before, VOLATILE | {"priority"})
    await _refuses_unknown(client, user, path)


async def test_user_round_trip_self_and_admin(client, user, admin):
    path = f"/api/users/{user.id}"

    def own_change(data):
        data["firstName"] = "Ada"
        data["lastLoginAt"] = "2001-01-01T00:00:00Z"  # server-owned: ignored

    before, after = await _put_back(client, user, path, own_change)
    assert after["firstName"] == "Ada" and after["lastLoginAt"] == before["lastLoginAt"]
    assert _without(after, VOLATILE | {"firstName"}) == _without(before, VOLATILE | {"firstName"})
    # role, status, email and username have their own routes: sent back changed, they are refused by name.
    for name, value in (("role", "admin"), ("status", "suspended"), ("email", "new@example.com")):
        assert_error(await client.put(path, json={**after, name: value}, headers=user.headers), 422, "VAL_001",
                     field=name)
    assert assert_ok(await client.get(path, headers=user.headers))["role"] == before["role"]

    def admin_change(data):
        data["profile"]["bio"] = "Set by an admin"

    before, after = await _put_back(client, admin, path, admin_change)
    assert after["profile"]["bio"] == "Set by an admin"
    assert _without(after, VOLATILE | {"profile"}) == _without(before, VOLATILE | {"profile"})
    await _refuses_unknown(client, user, path)
    await _refuses_unknown(client, admin, path)


async def test_file_round_trip(client, user):
    uploaded = assert_ok(await client.post("/api/files/upload", headers=user.headers,
                                           files={"file": ("notes.txt", b"round trip")}, data={"tags": "a"}), 201)
    path = f"/api/files/{uploaded['id']}"

    def change(data):
        data["tags"] = ["a", "b"]
        data["size"] = 1  # server-owned

    before, after = await _put_back(client, user, path, change)
    assert after["tags"] == ["a", "b"] and after["size"] == before["size"]
    assert _without(after, VOLATILE | {"tags"}) == _without(before, VOLATILE | {"tags"})
    await _refuses_unknown(client, user, path)


async def test_settings_round_trip(client, super_admin):
    path = "/api/settings"
    original = assert_ok(await client.get(path, headers=super_admin.headers))

    def change(data):
        data["general"]["siteName"] = "Troupe round trip"

    try:
        before, after = await _put_back(client, super_admin, path, change)
        assert after["general"]["siteName"] == "Troupe round trip"
        assert _without(after, VOLATILE | {"general"}) == _without(before, VOLATILE | {"general"})
        await _refuses_unknown(client, super_admin, path)
    finally:
        assert_ok(await client.put(path, json=original, headers=super_admin.headers))


def _request_schema(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}  # jsonschema resolves the $refs


def _schema_allows(schema: dict[str, Any], body: dict[str, Any]) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(body)


async def test_request_schemas_say_what_validation_refuses(client, user, super_admin):
    document = (await client.get("/openapi.json")).json()
    company = await make_company(client, user)
    from tests.test_workflows import body as workflow_body

    workflow = assert_ok(await client.post("/api/workflows", json=workflow_body(company["id"]), headers=user.headers),
                         201)
    # POST /api/tasks: what a type needs is in the schema, and the server agrees with it both ways.
    create = _request_schema(document, "/api/tasks", "post")
    base = {"name": "t", "companyId": company["id"]}
    cases = [({**base, "type": "workflow"}, "workflowId"), ({**base, "type": "single_agent"}, "agentId"),
             ({**base, "type": "batch"}, "workflowId"),
             ({**base, "type": "scheduled", "workflowId": workflow["id"]}, "scheduledAt"),
             ({**base, "type": "workflow", "workflowId": None}, "workflowId")]
    for sent, field in cases:
        assert not _schema_allows(create, sent), sent
        assert_error(await client.post("/api/tasks", json=sent, headers=user.headers), 422, "VAL_002", field=field)
    for sent in ({**base, "type": "workflow", "workflowId": workflow["id"]},
                 {**base, "type": "scheduled", "workflowId": workflow["id"], "scheduledAt": "2030-01-01T00:00:00Z"}):
        assert _schema_allows(create, sent), sent
        assert_ok(await client.post("/api/tasks", json=sent, headers=user.headers), 201)

    # Left out keeps a value; null, where it has no meaning, is refused by the schema and by the server alike.
    nulls = [(f"/api/workflows/{workflow['id']}", "/api/workflows/{workflow_id}", user, {"name": None}, "name"),
             (f"/api/users/{user.id}", "/api/users/{user_id}", user, {"firstName": None}, "firstName"),
             ("/api/settings", "/api/settings", super_admin, {"general": None}, "general"),
             ("/api/settings", "/api/settings", super_admin, {"general": {"siteName": None}}, "general.siteName")]
    for path, doc_path, who, sent, field in nulls:
        assert not _schema_allows(_request_schema(document, doc_path, "put"), sent), sent
        error = assert_error(await client.put(path, json=sent, headers=who.headers), 422, "VAL_003")
        assert error["field"] == field, error
    settings = _request_schema(document, "/api/settings", "put")
    assert _schema_allows(settings, {})  # nothing to change: the settings as they are
    assert_ok(await client.put("/api/settings", json={}, headers=super_admin.headers))
    # A whole GET answer is valid against its update schema (read-only names included).
    answer = assert_ok(await client.get(f"/api/workflows/{workflow['id']}", headers=user.headers))
    assert _schema_allows(_request_schema(document, "/api/workflows/{workflow_id}", "put"), answer)


async def test_trigger_schema_agrees_with_the_server(client, user):
    document = (await client.get("/openapi.json")).json()
    from tests.test_workflows import body as workflow_body

    company = await make_company(client, user)
    webhook = {"id": "hook", "type": "webhook", "configuration": {"secret": "s" * 20}}
    workflow = assert_ok(await client.post("/api/workflows", json=workflow_body(company["id"], triggers=[webhook]),
                                           headers=user.headers), 201)
    path, doc_path = f"/api/workflows/{workflow['id']}", "/api/workflows/{workflow_id}"
    update = _request_schema(document, doc_path, "put")
    # The answer (masked secret, the webhook's url) goes back as it came.
    answer = assert_ok(await client.get(path, headers=user.headers))
    assert answer["triggers"][0]["configuration"]["secret"] == "********"
    assert _schema_allows(update, answer)
    assert_ok(await client.put(path, json=answer, headers=user.headers))
    refused = [({"id": "s", "type": "schedule"}, "triggers.0.type"),
               ({"id": "f", "type": "file"}, "triggers.0.type"),
               ({"id": "m", "type": "manual", "configuration": {"x": 1}}, "triggers.0.configuration.x"),
               ({"id": "h", "type": "webhook", "configuration": {"secret": "short"}}, "triggers.0.configuration.secret"),
               ({"id": "e", "type": "event", "configuration": {"workflowId": workflow["id"], "on": "sometimes"}},
                "triggers.0.configuration.on")]
    for trigger, field in refused:
        assert not _schema_allows(update, {"triggers": [trigger]}), trigger
        assert_error(await client.put(path, json={"triggers": [trigger]}, headers=user.headers), 422, "VAL_001",
                     field=field)


async def test_agent_provider_rules_are_in_the_schema(client, user):
    document = (await client.get("/openapi.json")).json()
    create = _request_schema(document, "/api/agents", "post")
    base = {"name": "a", "type": "custom", "model": "m-1"}
    refused = [("custom", {}, "configuration.endpoint"),
               ("openai", {"endpoint": "https://llm.example/v1"}, "configuration.endpoint"),
               ("simulated", {"baseUrl": "https://llm.example/v1"}, "configuration.baseUrl"),
               ("simulated", {"apiKey": "sk-1"}, "configuration.apiKey")]
    for provider, configuration, field in refused:
        sent = {**base, "provider": provider, "configuration": configuration}
        assert not _schema_allows(create, sent), sent
        assert_error(await client.post("/api/agents", json=sent, headers=user.headers), 422, "VAL_001", field=field)
    sent = {**base, "provider": "simulated", "model": "simulated", "configuration": {}}
    assert _schema_allows(create, sent)
    assert_ok(await client.post("/api/agents", json=sent, headers=user.headers), 201)

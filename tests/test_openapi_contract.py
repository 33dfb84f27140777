"""The OpenAPI document declares every error an operation answers, in the envelope's model.

The rule checked here is read off the document alone (security, path parameters, body,
method), independently of ``troupe/platform/openapi.py`` which derives it from the routes;
real error answers are then validated against the schema the document declares for them.
"""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema
import pytest

from tests.utils.fixtures import assert_error

ERROR_REF = "#/components/schemas/ErrorEnvelope"
WRITES = {"post", "put", "patch", "delete"}
# The rate limiter does not count these (troupe/platform/ratelimit.py).
RATE_EXEMPT = ("/api/settings/health",)
RATE_EXEMPT_PATHS = {"/api/settings"}


@pytest.fixture(scope="module")
async def document(client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def expected_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    expected = {500, 503}
    if not (path.startswith(RATE_EXEMPT) or path in RATE_EXEMPT_PATHS):
        expected.add(429)
    # `{}` among the requirements: a token is optional (health), so never a 401.
    if operation.get("security") and {} not in operation["security"]:
        expected |= {401, 403}
    if any(p["in"] == "path" for p in params):
        expected.add(404)
    if method in WRITES:
        expected |= {409, 422}
    if has_body:
        expected |= {400, 413}
    if has_body or params:
        expected.add(422)
    return expected


def error_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    declared = document["paths"][path][method]["responses"].get(str(status))
    assert declared is not None, f"{method.upper()} {path} does not declare {status}"
    schema = declared["content"]["application/json"]["schema"]
    # jsonschema resolves the document's $refs when the components ride along.
    return {**schema, "components": document["components"]}


async def test_no_fastapi_validation_models(document):
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in str(document)
    envelope = schemas["ErrorEnvelope"]
    assert set(envelope["required"]) >= {"success", "error", "meta"}
    assert envelope["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}


async def test_every_operation_declares_its_error_statuses(document):
    missing, wrong_model = [], []
    for path, method, operation in operations(document):
        responses = operation["responses"]
        for status in expected_statuses(path, method, operation):
            if str(status) not in responses:
                missing.append(f"{method.upper()} {path} {status}")
        for status, response in responses.items():
            if int(status) < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            # Health answers its 503 with the report itself (which services are down).
            if schema.get("$ref") != ERROR_REF and not (path == "/api/settings/health" and status == "503"):
                wrong_model.append(f"{method.upper()} {path} {status}: {schema}")
    assert not missing, missing
    assert not wrong_model, wrong_model


async def test_settings_update_schemas_have_their_names_and_camel_case_fields(document):
    schemas = document["components"]["schemas"]
    # _partial() once named these after their last field (support_email, max_requests...).
    for name in ("support_email", "max_requests", "lockout_duration", "webhook_enabled", "message"):
        assert name not in schemas
    update = schemas["SettingsUpdate"]["properties"]
    # A section may be left out but not sent as null; updatedAt comes back from a GET and is ignored.
    assert update.pop("updatedAt")["readOnly"] is True
    refs = {field: prop["$ref"].rsplit("/", 1)[1] for field, prop in update.items()}
    assert refs == {"general": "GeneralUpdate", "security": "SecurityUpdate",
                    "notifications": "NotificationsUpdate", "limits": "LimitsUpdate",
                    "features": "FeaturesUpdate", "maintenance": "MaintenanceUpdate",
                    "rateLimits": "RateLimitsUpdate"}
    for name in refs.values():
        fields = schemas[name]["properties"]
        assert all("_" not in field for field in fields), (name, list(fields))
        assert schemas[name].get("required", []) == []  # a partial update
    assert {"siteName", "supportEmail"} <= set(schemas["GeneralUpdate"]["properties"])
    assert "passwordPolicy" in schemas["SecurityUpdate"]["properties"]


async def test_real_error_answers_match_their_declared_schema(client, document, user):
    missing_company = f"/api/companies/{uuid.uuid4()}"
    cases = [
        # (method, document path, concrete path, headers, json, status, code)
        ("get", "/api/companies", "/api/companies", {}, None, 401, "AUTH_001"),
        ("get", "/api/settings", "/api/settings", user.headers, None, 403, "AUTH_004"),
        ("get", "/api/companies/{company_id}", missing_company, user.headers, None, 404, "RES_001"),
        ("post", "/api/companies", "/api/companies", user.headers, {"name": ""}, 422, None),
        ("post", "/api/companies", "/api/companies", user.headers, {"name": "x" * 2_000_000}, 413, "VAL_008"),
    ]
    for method, doc_path, path, headers, body, status, code in cases:
        assert doc_path in document["paths"], doc_path
        response = await client.request(method.upper(), path, headers=headers, json=body)
        if code is None:
            error = assert_error(response, status, response.json()["error"]["code"])
            assert error["code"].startswith("VAL_") and error["field"], error
        else:
            assert_error(response, status, code)
        jsonschema.validate(response.json(), error_schema(document, doc_path, method, status),
                            cls=jsonschema.Draft202012Validator)


async def test_response_enumerations_are_enums(document):
    from troupe import rbac

    schemas = document["components"]["schemas"]
    assert set(schemas["UserOut"]["properties"]["role"]["enum"]) == {role.value for role in rbac.Role}
    assert set(schemas["UserOut"]["properties"]["status"]["enum"]) == {"active", "inactive", "suspended"}
    assert set(schemas["InvitationOut"]["properties"]["status"]["enum"]) == {"pending", "accepted", "revoked",
                                                                            "expired"}
    for field in ("type", "status", "priority"):
        assert "enum" in schemas["TaskOut"]["properties"][field], field

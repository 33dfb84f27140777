"""The OpenAPI document, with every error an operation can answer declared.

FastAPI documents only the success answer and a 422 in its own ``HTTPValidationError``
shape, which Troupe never sends (``handlers.py`` answers validation with the envelope).
``install`` replaces ``app.openapi`` with a builder that derives each operation's error
statuses from what the route actually does, in one place, so a new route is documented
the day it is added:

- 500 and 503 everywhere: an unexpected error (SYS_001), a dead Postgres or Redis
  (SYS_002 / SYS_005) or maintenance mode (BIZ_008);
- 429 unless the rate limiter exempts the path;
- 401 and 403 when the route depends on the caller (a missing or stale token; a role
  permission, the object's scope or a switched-off feature);
- 404 when the path names an object, or the body or query does (``companyId``, an
  upload or invitation token...);
- 409 on writes (a conflicting or duplicate value);
- 400, 413 when a body is accepted (unparsable form, body over the limit);
- 422 when the route takes any input (the envelope's VAL_* codes);
- a few statuses only some services raise (410, 415, 416, 423, 502, 504), listed below.

Every error answer refers to ``ErrorEnvelope``: ``{success: false, error, meta}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from troupe.models_base import StrictInput, state_text_rules
from troupe.platform import ratelimit
from troupe.platform.deps import get_current_user
from troupe.platform.schemas import CamelModel, ErrorBody, Meta

_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "VAL_003: the body could not be parsed",
    401: "AUTH_001/002/003/006: missing, invalid, expired or revoked credentials",
    403: "AUTH_004 / BIZ_007: missing permission, object out of scope, or feature disabled",
    404: "RES_001: no such object (or not visible to the caller)",
    409: "RES_002/003/004, VAL_006: conflicts with the current state or an existing value",
    410: "RES_006: the token, link or upload has expired",
    413: "VAL_008: the body exceeds the size limit",
    415: "VAL_007: file type not accepted",
    416: "VAL_001: requested range not satisfiable",
    422: "VAL_*: the input is invalid; `error.field` names the field, `error.details` lists every problem",
    423: "AUTH_005 / RES_005: account or resource temporarily locked",
    429: "SYS_004 / BIZ_005: rate limit or quota exceeded; see Retry-After",
    500: "SYS_001/002: unexpected server error",
    502: "SYS_003 / SYS_007 / BIZ_003: an outside service failed",
    503: "SYS_002 / SYS_005 / BIZ_008: a backing service is unavailable, or maintenance mode",
    504: "SYS_006: an outside service timed out",
}

# Statuses that only some services raise, by (method, path) as the document names it.
EXTRA_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/api/auth/login"): (401, 423),
    ("POST", "/api/auth/refresh"): (401,),
    ("POST", "/api/auth/register"): (502,),
    ("POST", "/api/auth/forgot-password"): (502,),
    # An unknown or used token is refused as bad credentials (AUTH_002).
    ("POST", "/api/auth/reset-password"): (401, 410),
    ("POST", "/api/auth/verify-email"): (401, 410),
    ("POST", "/api/users/invitations/accept"): (410,),
    ("POST", "/api/users/{user_id}/invite"): (502,),
    ("POST", "/api/workflows/{workflow_id}/triggers/{trigger_id}/webhook"): (401,),
    ("POST", "/api/files/upload"): (415,),
    ("POST", "/api/files/upload/chunk"): (410, 415),
    ("POST", "/api/files/upload/complete"): (410, 415, 423),
    ("GET", "/api/files/shared/{share_id}"): (401, 410),
    ("GET", "/api/files/{file_id}/download"): (416,),
    ("POST", "/api/tools/{tool_id}/test"): (502, 504),
    ("POST", "/api/agents/{agent_id}/train"): (415, 502, 504),
    # Knowledge sources are fetched and indexed when an agent is saved.
    ("POST", "/api/agents"): (415, 502, 504),
    ("PUT", "/api/agents/{agent_id}"): (415, 502, 504),
}


class ErrorEnvelope(CamelModel):
    """Every error answer: the spec's envelope with ``success: false``."""

    success: Literal[False]
    error: ErrorBody
    meta: Meta


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependencies(sub)


def _rate_limited(path: str) -> bool:
    return not (path.startswith(ratelimit.EXEMPT_PREFIXES) or path.rstrip("/") in ratelimit.EXEMPT_PATHS)


def _authenticated(dependant: Dependant) -> bool:
    return any(d.call is get_current_user for d in _dependencies(dependant))


def error_statuses(*, method: str, path: str, dependant: Dependant, has_body: bool) -> set[int]:
    """The error statuses one operation can answer, derived from what it depends on.
    ``has_body``: the operation documents a request body (uploads read theirs as a stream)."""
    deps = list(_dependencies(dependant))
    statuses = {500, 503}
    if _rate_limited(path):
        statuses.add(429)
    if _authenticated(dependant):
        statuses |= {401, 403}
    has_body = has_body or any(d.body_params for d in deps)
    has_input = has_body or any(d.path_params or d.query_params or d.header_params for d in deps)
    if method in _WRITES:
        statuses |= {409, 422}
    if has_body:
        statuses |= {400, 413}
    if has_input:
        statuses |= {404, 422}
    statuses.update(EXTRA_STATUSES.get((method, path), ()))
    return statuses


def _error_response(status: int) -> dict[str, Any]:
    return {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": _ERROR_REF}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    envelope = TypeAdapter(ErrorEnvelope).json_schema(ref_template=_REF, mode="serialization")
    for name, definition in envelope.pop("$defs", {}).items():
        schemas.setdefault(name, definition)  # ErrorBody and Meta are the envelope's own models
    schemas["ErrorEnvelope"] = envelope

    for route in routing.iter_route_contexts(app.routes):
        if not isinstance(route.original_route, routing.APIRoute) or not route.include_in_schema:
            continue
        path = route.path_format
        for method in route.methods or ():
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            if operation.get("security") and not _authenticated(route.dependant):
                # A token is optional here (health shows details to system:read): say so.
                operation["security"] = [{}, *operation["security"]]
            responses = operation.setdefault("responses", {})
            statuses = error_statuses(method=method, path=path, dependant=route.dependant,
                                      has_body="requestBody" in operation)
            for status in sorted(statuses):
                declared = responses.get(str(status))
                # FastAPI's own 422 (HTTPValidationError) is replaced; a route's own
                # declaration (health's 503 report) is kept, given content if it has none.
                if declared is None or status == 422:
                    responses[str(status)] = _error_response(status)
                elif "content" not in declared:
                    declared["content"] = {"application/json": {"schema": _ERROR_REF}}
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _state_text_rules(document)
    app.openapi_schema = document
    return document


def _input_models() -> dict[str, type[StrictInput]]:
    found: dict[str, type[StrictInput]] = {}
    pending: list[type[StrictInput]] = [StrictInput]
    while pending:
        model = pending.pop()
        found.setdefault(model.__name__, model)
        pending.extend(model.__subclasses__())
    return found


def _state_text_rules(document: dict[str, Any]) -> None:
    """Request strings carry what validation requires of every string (no NUL, a visible
    character where stripped text needs a minimum length): on the request models' components,
    whatever ``json_schema_extra`` a model has of its own, and on string parameters."""
    inputs = _input_models()
    for name, schema in document["components"]["schemas"].items():
        model = inputs.get(name)
        if model is not None:
            state_text_rules(schema, stripped=bool(model.model_config.get("str_strip_whitespace")))
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                state_text_rules({"properties": {parameter["name"]: parameter.get("schema", {})}}, stripped=False)


def install(app: FastAPI) -> None:
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

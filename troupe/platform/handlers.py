"""Every failure leaves as the spec's envelope with the right status."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from troupe.config import get_settings
from troupe.errors import AppError, ErrorCode
from troupe.infra.faults import Dependency, outage_of
from troupe.platform.context import current_request
from troupe.platform.schemas import build_meta

log = logging.getLogger("troupe.http")

_STATUS_CODES = {
    400: ErrorCode.INVALID_FORMAT, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.INSUFFICIENT_PERMISSIONS,
    404: ErrorCode.RESOURCE_NOT_FOUND, 405: ErrorCode.INVALID_FORMAT, 409: ErrorCode.RESOURCE_ALREADY_EXISTS,
    413: ErrorCode.FILE_TOO_LARGE, 415: ErrorCode.INVALID_FILE_TYPE, 422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMIT_EXCEEDED, 503: ErrorCode.SERVICE_UNAVAILABLE,
}


def error_response(status: int, code: ErrorCode | str, message: str, *, details: Any = None,
                   field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    meta = build_meta()
    body = {
        "success": False,
        "error": {"code": str(code), "message": message, "details": details, "field": field,
                  "timestamp": meta.timestamp, "requestId": meta.request_id},
        "meta": meta.model_dump(by_alias=True),
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    # The whole body is wrong (not an object, say): the body is the offending field.
    return ".".join(parts) or (str(loc[0]) if loc else "")


def _validation_code(errors: list[dict[str, Any]]) -> ErrorCode:
    first = errors[0] if errors else {}
    kind = str(first.get("type", ""))
    if kind == "missing":
        return ErrorCode.REQUIRED_FIELD_MISSING
    if kind == "value_error" and "email" in str(first.get("msg", "")).lower():
        return ErrorCode.INVALID_EMAIL
    if kind in ("json_invalid", "model_attributes_type", "dict_type", "timezone_aware") \
            or kind.endswith("_parsing") \
            or kind.endswith("_type"):
        return ErrorCode.INVALID_FORMAT
    return ErrorCode.VALIDATION_ERROR


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, details=exc.details, field=exc.field,
                              headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        code = _validation_code(list(exc.errors()))
        first = errors[0] if errors else {"field": None, "message": "Invalid request"}
        message = "Malformed JSON body" if first.get("type") == "json_invalid" else \
            f"{first['field'] or 'request'}: {first['message']}"
        return error_response(422, code, message, details=errors, field=first["field"] or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
        message = "Route not found" if exc.status_code == 404 else str(exc.detail)
        # FastAPI's own 400 is a body it could not parse (malformed JSON): the body is at fault.
        field = "body" if exc.status_code == 400 else None
        return error_response(exc.status_code, code, message, field=field, headers=getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # A constraint a service did not check first: still the caller's input.
        log.warning("integrity error request_id=%s: %s", current_request().request_id, exc.orig)
        return error_response(409, ErrorCode.DUPLICATE_VALUE, "The value conflicts with an existing record")

    @app.exception_handler(DBAPIError)
    async def _db(_: Request, exc: DBAPIError) -> JSONResponse:
        if (dependency := outage_of(exc)) is not None:
            return outage_response(dependency, exc)
        log.error("database error request_id=%s", current_request().request_id, exc_info=exc)
        return error_response(500, ErrorCode.DATABASE_ERROR, "Database error")

    # Registered by class (not only through the catch-all below) so that Starlette's
    # ExceptionMiddleware answers them inside the middleware stack, with the request's headers.
    for backend_error in (SQLAlchemyError, RedisError, psycopg.Error):
        app.add_exception_handler(backend_error, _backend_error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if (dependency := outage_of(exc)) is not None:
            return outage_response(dependency, exc)
        log.error("unhandled error request_id=%s", current_request().request_id, exc_info=exc)
        return error_response(500, ErrorCode.INTERNAL_ERROR, "Internal server error")


async def _backend_error(_: Request, exc: Exception) -> JSONResponse:
    if (dependency := outage_of(exc)) is not None:
        return outage_response(dependency, exc)
    log.error("backend error request_id=%s", current_request().request_id, exc_info=exc)
    if isinstance(exc, SQLAlchemyError | psycopg.Error):
        return error_response(500, ErrorCode.DATABASE_ERROR, "Database error")
    return error_response(500, ErrorCode.INTERNAL_ERROR, "Internal server error")


def outage_response(dependency: Dependency, exc: BaseException | None = None) -> JSONResponse:
    """503 for a request that met a dead backing service: SYS_002 for Postgres, SYS_005
    for Redis (the spec's codes), with Retry-After. A warning, not a stack trace per
    request: during an outage every request lands here, and health reports the cause."""
    log.warning("%s unavailable request_id=%s: %s: %s", dependency, current_request().request_id,
                type(exc).__name__ if exc else "-", exc)
    headers = {"Retry-After": str(get_settings().outage_retry_after)}
    if dependency == "postgres":
        return error_response(503, ErrorCode.DATABASE_ERROR, "The database is unavailable; try again shortly",
                              details={"service": dependency}, headers=headers)
    return error_response(503, ErrorCode.SERVICE_UNAVAILABLE,
                          "A backing service is unavailable; try again shortly",
                          details={"service": dependency}, headers=headers)

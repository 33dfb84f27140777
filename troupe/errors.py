"""The spec's error codes and the one exception type that carries them.

Lives outside ``troupe.platform`` because services, the engine and actors all
raise it; only the HTTP layer turns it into a response.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    UNAUTHORIZED = "AUTH_001"
    INVALID_TOKEN = "AUTH_002"
    TOKEN_EXPIRED = "AUTH_003"
    INSUFFICIENT_PERMISSIONS = "AUTH_004"
    ACCOUNT_LOCKED = "AUTH_005"
    INVALID_CREDENTIALS = "AUTH_006"
    MFA_REQUIRED = "AUTH_007"
    EMAIL_NOT_VERIFIED = "AUTH_008"

    VALIDATION_ERROR = "VAL_001"
    REQUIRED_FIELD_MISSING = "VAL_002"
    INVALID_FORMAT = "VAL_003"
    INVALID_EMAIL = "VAL_004"
    WEAK_PASSWORD = "VAL_005"
    DUPLICATE_VALUE = "VAL_006"
    INVALID_FILE_TYPE = "VAL_007"
    FILE_TOO_LARGE = "VAL_008"

    RESOURCE_NOT_FOUND = "RES_001"
    RESOURCE_ALREADY_EXISTS = "RES_002"
    RESOURCE_IN_USE = "RES_003"
    RESOURCE_LIMIT_EXCEEDED = "RES_004"
    RESOURCE_LOCKED = "RES_005"
    RESOURCE_EXPIRED = "RES_006"

    WORKFLOW_INVALID = "BIZ_001"
    AGENT_UNAVAILABLE = "BIZ_002"
    TOOL_ERROR = "BIZ_003"
    EXECUTION_FAILED = "BIZ_004"
    QUOTA_EXCEEDED = "BIZ_005"
    PAYMENT_REQUIRED = "BIZ_006"
    FEATURE_DISABLED = "BIZ_007"
    MAINTENANCE_MODE = "BIZ_008"

    INTERNAL_ERROR = "SYS_001"
    DATABASE_ERROR = "SYS_002"
    EXTERNAL_SERVICE_ERROR = "SYS_003"
    RATE_LIMIT_EXCEEDED = "SYS_004"
    SERVICE_UNAVAILABLE = "SYS_005"
    TIMEOUT_ERROR = "SYS_006"
    NETWORK_ERROR = "SYS_007"
    STORAGE_ERROR = "SYS_008"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.INSUFFICIENT_PERMISSIONS: 403,
    ErrorCode.ACCOUNT_LOCKED: 423,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.MFA_REQUIRED: 401,
    ErrorCode.EMAIL_NOT_VERIFIED: 403,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.REQUIRED_FIELD_MISSING: 422,
    ErrorCode.INVALID_FORMAT: 422,
    ErrorCode.INVALID_EMAIL: 422,
    ErrorCode.WEAK_PASSWORD: 422,
    ErrorCode.DUPLICATE_VALUE: 409,
    ErrorCode.INVALID_FILE_TYPE: 415,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.RESOURCE_NOT_FOUND: 404,
    ErrorCode.RESOURCE_ALREADY_EXISTS: 409,
    ErrorCode.RESOURCE_IN_USE: 409,
    ErrorCode.RESOURCE_LIMIT_EXCEEDED: 409,
    ErrorCode.RESOURCE_LOCKED: 423,
    ErrorCode.RESOURCE_EXPIRED: 410,
    ErrorCode.WORKFLOW_INVALID: 422,
    ErrorCode.AGENT_UNAVAILABLE: 409,
    ErrorCode.TOOL_ERROR: 502,
    ErrorCode.EXECUTION_FAILED: 500,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.PAYMENT_REQUIRED: 402,
    ErrorCode.FEATURE_DISABLED: 403,
    ErrorCode.MAINTENANCE_MODE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.DATABASE_ERROR: 500,
    ErrorCode.EXTERNAL_SERVICE_ERROR: 502,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT_ERROR: 504,
    ErrorCode.NETWORK_ERROR: 502,
    ErrorCode.STORAGE_ERROR: 500,
}


class AppError(Exception):
    """A failure the caller should see, with the spec's code."""

    def __init__(self, code: ErrorCode, message: str, *, details: Any = None, field: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.field = field
        self.status = status or HTTP_STATUS[code]
        self.headers = headers or {}

    def __reduce__(self):  # picklable across Ray processes
        return (_rebuild_app_error, (self.code, self.message, self.details, self.field, self.status, self.headers))


def _rebuild_app_error(code, message, details, field, status, headers) -> AppError:
    return AppError(code, message, details=details, field=field, status=status, headers=headers)


def not_found(what: str) -> AppError:
    return AppError(ErrorCode.RESOURCE_NOT_FOUND, f"{what} not found")


def forbidden(message: str = "You do not have permission to do this") -> AppError:
    return AppError(ErrorCode.INSUFFICIENT_PERMISSIONS, message)


def invalid(message: str, *, field: str | None = None, details: Any = None,
            code: ErrorCode = ErrorCode.VALIDATION_ERROR) -> AppError:
    return AppError(code, message, field=field, details=details)

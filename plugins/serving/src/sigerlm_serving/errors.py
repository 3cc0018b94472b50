"""API errors: every 4xx/5xx answer is ``{"error": {"code", "message", "type"}}`` with a
machine-readable ``code``; never a stack trace or a file path."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, self.details)


def error_body(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    if status in (401, 403):
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    error: dict[str, Any] = {"code": code, "message": message, "type": kind}
    if details is not None:
        error["details"] = details
    return {"error": error}

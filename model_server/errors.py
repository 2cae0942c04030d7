"""Errors as Google APIs return them: ``{"error": {"code", "message", "status"}}``.

One definition for the serving container and the local Vertex AI (local_cloud.vertex), which
answer a refused request in the same words.
"""

from __future__ import annotations

# google.rpc.Code names with their HTTP status and numeric code, as Google APIs map them.
_STATUS_CODES = {
    "INVALID_ARGUMENT": (400, 3),
    "FAILED_PRECONDITION": (400, 9),
    "NOT_FOUND": (404, 5),
    "ALREADY_EXISTS": (409, 6),
    "UNAVAILABLE": (503, 14),
    "INTERNAL": (500, 13),
}


class ApiError(Exception):
    """A request the API refuses, carried to the caller as Google's error JSON."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.http_status, self.rpc_code = _STATUS_CODES[status]

    def http_body(self) -> dict:
        """The body Google APIs answer with: ``{"error": {"code", "message", "status"}}``."""
        return {"error": {"code": self.http_status, "message": self.message, "status": self.status}}

    def rpc_status(self) -> dict:
        """The google.rpc.Status an Operation's ``error`` holds."""
        return {"code": self.rpc_code, "message": self.message}


def from_answer(http_status: int, body: bytes) -> ApiError:
    """The error another server answered with Google's error JSON, as this server's own to pass on."""
    import json

    try:
        error = json.loads(body)["error"]
        status, message = error["status"], str(error["message"])
    except (ValueError, KeyError, TypeError):
        status, message = None, body[:500].decode("utf-8", "replace")
    if status not in _STATUS_CODES:
        status = next((name for name, (code, _) in _STATUS_CODES.items() if code == http_status), "INTERNAL")
    return ApiError(status, message)


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)

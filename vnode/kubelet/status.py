"""``metav1.Status`` objects written on the exec error stream (remotecommand v4/v5).

The client parses them with client-go's ``errorDecoderV4``: ``Success`` ends quietly, a
``NonZeroExitCode`` reason with an ``ExitCode`` cause becomes the command's exit code, and any
other ``Failure`` is printed as an error with its ``message``.
"""

from __future__ import annotations

import json
from typing import Any

Status = dict[str, Any]


def success() -> Status:
    return {"metadata": {}, "status": "Success"}


def exit_code(code: int) -> Status:
    """The process ended with ``code`` != 0. ``StatusCause.Type`` serialises as "reason"."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def failure(message: str, *, reason: str = "InternalError", code: int = 500) -> Status:
    """Anything else that went wrong; kubectl prints ``message``."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def for_exit(code: int) -> Status:
    return success() if code == 0 else exit_code(code)


def encode(status: Status) -> bytes:
    return json.dumps(status, separators=(",", ":")).encode()


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 422: "Invalid", 500: "InternalError"}


def http_error(code: int, message: str) -> Status:
    """A full ``v1 Status`` object for an HTTP error response."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }

"""``metav1.Status`` objects written on the exec error stream (remotecommand v4/v5).

The client parses them with client-go's ``errorDecoderV4``: ``Success`` ends quietly, a
``NonZeroExitCode`` reason with an ``ExitCode`` cause becomes the command's exit code, and any
other ``Failure`` is printed as an error with its ``message``.
"""

from __future__ import annotations

from typing import Any

from plugin_client import channel
from vnode.kubelet.backends import ExecFailed

Status = dict[str, Any]


def success() -> Status:
    return channel.status_success()


def exit_code(code: int) -> Status:
    """The process ended with ``code`` != 0. ``StatusCause.Type`` serialises as "reason"."""
    return channel.status_exit_code(code)


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


def from_backend(error: ExecFailed) -> Status:
    """The backend's own Status when it sent a usable one (kubectl then prints exactly what the
    plugin said), else an InternalError Failure with the error's message."""
    given = error.status
    if given is not None and given.get("status") == "Failure" and isinstance(given.get("message"), str):
        return dict(given)
    return failure(str(error) or "command ended without an exit status")


def encode(status: Status) -> bytes:
    """Go's JSON bytes for the Status (shared with the plugin exec extension)."""
    return channel.encode_status(status)


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

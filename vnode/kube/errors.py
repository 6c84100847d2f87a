"""The error types of the apiserver adapter.

Everything above `vnode.kube` sees these and only these: a status code from the apiserver (or a
transport failure) is classified once, here, so controllers decide by type ("already gone",
"someone else changed it", "try later") instead of by number.
"""

from __future__ import annotations

from typing import Any


class KubeError(Exception):
    """An apiserver call failed; `status` is the HTTP status (0 for transport failures)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body = body


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: a resourceVersion or uid precondition failed, or the object already exists."""


class AlreadyExists(Conflict):
    """409 with reason AlreadyExists: a create found the name taken."""


class Gone(KubeError):
    """410: the resourceVersion a list/watch asked for has been compacted away; relist."""


class Forbidden(KubeError):
    """401/403: the agent's credentials may not do this. Retrying will not help."""


class Invalid(KubeError):
    """400/422: the apiserver rejected the request body. A bug or bad pod input; not retried."""


class Transient(KubeError):
    """Connection failures, timeouts, 429 and 5xx: worth retrying later.

    `retry_after` is the server's Retry-After hint in seconds, when it sent one.
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "", body: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, reason=reason, body=body)
        self.retry_after = retry_after


def classify(status: int, body: Any, *, context: str, retry_after: float | None = None) -> KubeError:
    """Turn an apiserver error response into one of the error types above.

    `body` is the decoded response (normally a metav1.Status dict); its `reason` and `message`
    are kept so the error says what the apiserver said, prefixed by `context` (verb and path).
    """
    reason = ""
    detail = ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        detail = str(body.get("message") or "")
    elif isinstance(body, (str, bytes)):
        detail = body.decode(errors="replace") if isinstance(body, bytes) else body
        detail = detail.strip()[:500]
    message = f"{context}: {status} {reason}: {detail}".rstrip(": ")
    if status == 404:
        return NotFound(message, status=status, reason=reason, body=body)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(message, status=status, reason=reason, body=body)
    if status == 410:
        return Gone(message, status=status, reason=reason, body=body)
    if status in (401, 403):
        return Forbidden(message, status=status, reason=reason, body=body)
    if status in (400, 422):
        return Invalid(message, status=status, reason=reason, body=body)
    if status == 429 or status >= 500:
        return Transient(message, status=status, reason=reason, body=body, retry_after=retry_after)
    return KubeError(message, status=status, reason=reason, body=body)

"""The errors that cross the plugin boundary, classified so the agent can choose a retry policy.

The client never retries. It raises one of these, and the caller decides:

| what happened                                            | error                  | retry? |
|----------------------------------------------------------|------------------------|--------|
| connection refused/reset, socket missing, TLS failure,   | TransientPluginError   | yes    |
| timeout, body cut short                                  |                        |        |
| HTTP 5xx, 408, 429, and 401 (a token file may be renewed)| TransientPluginError   | yes    |
| HTTP 404 on /delete                                      | PodNotFound            | no: the pod is already gone remotely |
| HTTP 404/405/501 or a refused upgrade on /exec           | ExecNotSupported       | no     |
| HTTP 404/405/501 on /usage (vnode's usage extension)     | UsageNotSupported      | no     |
| any other HTTP 3xx/4xx                                   | PermanentPluginError   | no     |
| 2xx with a body that is not the expected JSON            | WireFormatError        | no     |

How a plugin says "I do not know this pod":

- on `/delete` it answers **404** (vnode's server helper does this when the backend raises
  PodNotFound). A 404 crosses interLink's API unchanged, because the API copies the plugin's status
  code. interLink's own plugins do not do this (the Go SLURM plugin drops the connection), so a
  plugin that never says 404 just keeps a delete failing as transient;
- on `/status` it leaves the pod out of its answer (a status call is about many pods; one unknown
  pod is not an error). The Go SLURM plugin instead answers such a pod with no container states.

Other 4xx answers are the plugin refusing the request; their one-line text body becomes the error
message.
"""

from __future__ import annotations

__all__ = [
    "ExecNotSupported",
    "PermanentPluginError",
    "PluginError",
    "PodNotFound",
    "TransientPluginError",
    "UsageNotSupported",
    "WireFormatError",
    "is_transient",
    "one_line",
]

# Long enough for any sensible plugin message, short enough for a pod condition message.
MAX_MESSAGE_CHARS = 1024


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The message as one line: whitespace runs collapsed, trimmed to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class PluginError(Exception):
    """Base of everything the plugin client raises.

    ``op`` names the call (create, delete, status, ping, logs, exec), ``status`` is the HTTP status
    when there was one, and ``session`` is the InterLink-Http-Session header value of the request,
    to find it in the plugin's log.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        op: str = "",
        status: int | None = None,
        session: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.op = op
        self.status = status
        self.session = session

    def __str__(self) -> str:
        prefix = f"plugin {self.op}: " if self.op else ""
        return prefix + self.message


class TransientPluginError(PluginError):
    """The call may succeed if repeated: the plugin was unreachable, slow, overloaded or failing."""

    transient = True


class PermanentPluginError(PluginError):
    """The plugin understood the request and refused it; repeating it will not help."""


class PodNotFound(PermanentPluginError):
    """The plugin does not know the pod (HTTP 404 on /delete). For a delete this means "already gone"."""


class ExecNotSupported(PermanentPluginError):
    """The plugin has no exec extension (no /exec route, or it refused the WebSocket upgrade)."""

    def __init__(self, message: str = "exec not supported by this plugin", *, op: str = "", status: int | None = None,
                 session: str = "") -> None:
        super().__init__(message, op=op, status=status, session=session)


class UsageNotSupported(PermanentPluginError):
    """The plugin has no usage extension (HTTP 404/405/501 on /usage): report no usage at all."""

    def __init__(self, message: str = "usage not supported by this plugin", *, op: str = "", status: int | None = None,
                 session: str = "") -> None:
        super().__init__(message, op=op, status=status, session=session)


class WireFormatError(PluginError, ValueError):
    """A JSON document does not have the shape of the wire type; ``path`` names the bad field.

    Raised when decoding plugin answers (a plugin bug, not retried) and when a plugin server decodes
    a request (answered with HTTP 400).
    """

    def __init__(self, path: str, problem: str, *, op: str = "", status: int | None = None, session: str = "") -> None:
        where = path or "body"
        super().__init__(f"{where}: {problem}", op=op, status=status, session=session)
        self.path = path
        self.problem = problem


def is_transient(error: BaseException) -> bool:
    """True when repeating the failed call may succeed (the retry policy's one question)."""
    return isinstance(error, PluginError) and error.transient

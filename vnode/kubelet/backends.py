"""The narrow boundary between the kubelet front and the rest of the agent.

The agent implements these Protocols (pod cache, plugin client, apiserver reviews); the
kubelet front depends on nothing else. Unit and integration tests provide their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

# Defined in vnode.kube.identity (shared with vnode.kube.reviews); re-exported for the kubelet code.
from vnode.kube.identity import AccessDecision as AccessDecision  # noqa: PLC0414 (re-export)
from vnode.kube.identity import UserInfo as UserInfo  # noqa: PLC0414 (re-export)
from vnode.kubelet.requests import LogOptions

Pod = Mapping[str, Any]  # a v1.Pod as a JSON-shaped dict (what the informer cache holds)


class PodLookup(Protocol):
    """The agent's view of the pods bound to this node."""

    async def get_pod(self, namespace: str, name: str) -> Pod | None: ...

    async def list_pods(self) -> Sequence[Pod]: ...


class NotFound(Exception):
    """404: the backend does not know the pod or container. The message is shown to the user."""


class BackendError(Exception):
    """The backend failed. ``status`` is the HTTP status the caller gets: 503 when the plugin is
    unreachable or overloaded (worth retrying), 500 otherwise."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class LogsSource(Protocol):
    """Container logs (the agent forwards to the plugin's ``/getLogs``).

    Called only after the pod and container were found. Awaiting ``logs`` opens the stream and
    raises :class:`NotFound` or :class:`BackendError` before any byte, so the caller still gets a
    proper HTTP status; iterating the result yields raw log bytes (a failure mid-stream raises
    :class:`BackendError` and cuts the response). With ``options.follow`` it keeps yielding until
    the container ends or the caller stops iterating (the iterator is then closed with
    ``aclose()`` if it has one). The front enforces ``limit_bytes`` itself as well, so a plugin
    that ignores it is still correct.
    """

    async def logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """One exec (or attach, with an empty command) into a container."""

    namespace: str
    pod: str
    pod_uid: str  # from the cached pod, so the plugin can find its job
    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool  # never True together with tty
    tty: bool


OutputChannel = Literal["stdout", "stderr"]


class ExecSession(Protocol):
    """A running command. The front drives it from one task per direction."""

    async def send_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None:
        """The client's stdin reached EOF."""

    async def resize(self, size: TerminalSize) -> None: ...

    def output(self) -> AsyncIterator[tuple[OutputChannel, bytes]]:
        """stdout/stderr chunks as they come; ends when both are closed."""
        ...

    async def wait(self) -> int:
        """The exit code (0..255); called after ``output()`` ended. Raises :class:`ExecFailed`
        when the command ended without one (the backend lost it, or could not run it)."""
        ...

    async def close(self) -> None:
        """Abort: the client went away. Must be idempotent and safe after ``wait``."""


class ExecNotSupported(Exception):
    """The backend cannot exec (or attach); the client is told so in a Failure Status."""


class ExecFailed(Exception):
    """The command has no exit code. ``status`` is a ``metav1.Status`` from the backend to pass
    on to the client unchanged (None: the front builds a Failure from the message)."""

    def __init__(self, message: str, *, status: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExecBackend(Protocol):
    async def exec(self, spec: ExecSpec) -> ExecSession:
        """Start ``spec.command``; raises :class:`ExecNotSupported` if the plugin can't."""
        ...

    async def attach(self, spec: ExecSpec) -> ExecSession:
        """Attach to the container's main process; :class:`ExecNotSupported` if unsupported."""
        ...


class ReviewClient(Protocol):
    """TokenReview and SubjectAccessReview against the apiserver (the agent's ``vnode/kube``)."""

    async def token_review(self, token: str) -> UserInfo | None:
        """The token's user, or None if the apiserver says it is not authenticated."""
        ...

    async def subject_access_review(
        self,
        user: UserInfo,
        verb: str,
        resource: str,
        subresource: str,
        name: str,
    ) -> AccessDecision:
        """``authorization.k8s.io/v1`` SubjectAccessReview of a cluster-scoped resource
        attribute (``nodes``, ``name`` = this node, group ""), carrying the user's name,
        uid, groups and extra."""
        ...


# ---- usage (/metrics/resource, /stats/summary) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """Cumulative CPU (core-nanoseconds) and memory in use (bytes) as of ``timestamp``;
    ``cpu_nano_cores`` is the current rate when known."""

    timestamp: datetime
    cpu_core_nanoseconds: int
    memory_working_set_bytes: int
    cpu_nano_cores: int | None = None


@dataclass(frozen=True, slots=True)
class ContainerFigures:
    name: str
    start_time: datetime | None
    figures: Figures


@dataclass(frozen=True, slots=True)
class PodFigures:
    namespace: str
    name: str
    uid: str
    start_time: datetime | None
    figures: Figures
    containers: tuple[ContainerFigures, ...]


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What the node's pods consume: ``pods`` are the running ones (the kubelet reports running
    containers only); ``node`` is the sum over every pod, None when nothing was ever measured."""

    node_start_time: datetime
    node: Figures | None
    pods: tuple[PodFigures, ...]


class UsageSource(Protocol):
    """CPU and memory of the node's pods (the agent asks the plugin's usage extension)."""

    async def usage(self) -> UsageReport | None:
        """The current figures; None when the backend cannot measure usage at all (a plugin
        without the extension). Raises :class:`BackendError` when it can but failed now."""
        ...

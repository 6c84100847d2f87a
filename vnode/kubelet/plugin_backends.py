"""The kubelet front's backends on top of the agent: the pod cache and the plugin client.

* :class:`CachedPods` answers pod lookups from the agent's informer-fed pod records (no
  apiserver call per request; the cache holds only pods bound to this node).
* :class:`PluginLogs` forwards ``/containerLogs`` to the plugin's ``/getLogs`` with interLink's
  ``LogStruct`` (pod UID from the cached pod).
* :class:`PluginExec` forwards exec to vnode's plugin-API exec extension
  (``plugin_client/EXEC.md``).
* :class:`PluginUsage` asks the plugin's usage extension (``plugin_client/USAGE.md``) about every
  pod of the node, for ``/metrics/resource`` and ``/stats/summary``.

Everything the plugin says goes through ``plugin_client``'s classified errors and is turned into
the front's own (:class:`NotFound`, :class:`BackendError`, :class:`ExecNotSupported`,
:class:`ExecFailed`), so the front never sees a plugin type.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from plugin_client import errors as plugin_errors
from plugin_client.channel import ExecResult
from plugin_client.logformat import pod_fields
from plugin_client.models import ExecRequest, LogOpts, LogStruct
from plugin_client.usage import ContainerUsage, PodUsage
from vnode.kubelet.backends import (
    BackendError,
    ContainerFigures,
    ExecFailed,
    ExecNotSupported,
    ExecSpec,
    Figures,
    NotFound,
    OutputChannel,
    Pod,
    PodFigures,
    PodLookup,
    TerminalSize,
    UsageReport,
)
from vnode.kubelet.requests import LogOptions

log = logging.getLogger(__name__)


# ---- pods ------------------------------------------------------------------------------------


class PodCache(Protocol):
    """The agent's pod records (``vnode.node.pod_controller.PodController`` has these)."""

    def find(self, namespace: str, name: str) -> Pod | None: ...

    def list_pods(self) -> Sequence[Pod]: ...


class CachedPods:
    """:class:`~vnode.kubelet.backends.PodLookup` over the agent's pod cache."""

    def __init__(self, cache: PodCache) -> None:
        self._cache = cache

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self._cache.find(namespace, name)

    async def list_pods(self) -> Sequence[Pod]:
        return list(self._cache.list_pods())


def container_names(pod: Pod) -> frozenset[str]:
    """Containers a log or exec request may name: regular, init and ephemeral ones."""
    spec = pod.get("spec") or {}
    names: set[str] = set()
    for key in ("containers", "initContainers", "ephemeralContainers"):
        names.update(str(c.get("name", "")) for c in spec.get(key) or [])
    names.discard("")
    return frozenset(names)


def _pod_uid(pod: Pod) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


async def _find_container(pods: PodLookup, namespace: str, name: str, container: str) -> Pod:
    pod = await pods.get_pod(namespace, name)
    if pod is None:
        raise NotFound(f"pod {namespace}/{name} is not on this node")
    if container not in container_names(pod):
        raise NotFound(f"container {container!r} is not valid for pod {namespace}/{name}")
    return pod


def _backend_error(error: plugin_errors.PluginError, what: str) -> NotFound | BackendError:
    """A plugin failure as the front's error: 404 for an unknown pod, 503 when retrying may help."""
    if isinstance(error, plugin_errors.PodNotFound) or error.status == 404:
        return NotFound(f"{what}: the plugin does not know it ({error})")
    if error.transient:
        return BackendError(f"{what}: plugin unavailable: {error}", status=503)
    return BackendError(f"{what}: {error}", status=500)


# ---- logs ------------------------------------------------------------------------------------


class PluginLogsClient(Protocol):
    """``plugin_client.client.PluginClient.logs``."""

    async def logs(self, request: LogStruct) -> AsyncIterable[bytes]: ...


def log_opts(options: LogOptions) -> LogOpts:
    """interLink's ``ContainerLogOpts`` for a kubelet log request, field for field as interLink's
    virtual kubelet fills it (0 / zero time = not set).

    One exception: interLink's API refuses ``Tail`` together with ``Bytes`` (HTTP 400), so with
    both only ``Tail`` is sent; the front cuts the output at ``limitBytes`` itself anyway.
    """
    tail = options.tail_lines or 0
    limit = options.limit_bytes or 0
    return LogOpts(
        tail=tail,
        limit_bytes=0 if tail else limit,
        timestamps=options.timestamps,
        follow=options.follow,
        previous=options.previous,
        since_seconds=options.since_seconds or 0,
        since_time=options.since_time,
    )


class PluginLogs:
    """:class:`~vnode.kubelet.backends.LogsSource` forwarding to the plugin's ``/getLogs``."""

    def __init__(self, pods: PodLookup, plugin: PluginLogsClient) -> None:
        self._pods = pods
        self._plugin = plugin

    async def logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        found = await _find_container(self._pods, namespace, pod, container)
        what = f"logs of {namespace}/{pod}/{container}"
        if options.tail_lines == 0 and not options.follow:
            # interLink's wire has no "zero lines" (Tail 0 means all): answer it here. With
            # follow, Tail 0 goes to the plugin and the user sees the history too.
            return _empty()
        request = LogStruct(
            namespace=namespace,
            pod_uid=_pod_uid(found),
            pod_name=pod,
            container_name=container,
            opts=log_opts(options),
        )
        try:
            stream = await self._plugin.logs(request)
        except plugin_errors.PluginError as error:
            raise _backend_error(error, what) from error
        return _relay(stream, what)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _relay(stream: AsyncIterable[bytes], what: str) -> AsyncIterator[bytes]:
    """The plugin's bytes; a broken stream becomes BackendError, and closing us closes it."""
    try:
        async for chunk in stream:
            yield chunk
    except plugin_errors.PluginError as error:
        raise BackendError(f"{what}: {error}", status=503 if error.transient else 500) from error
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()


# ---- exec ------------------------------------------------------------------------------------


class PluginExecSession(Protocol):
    """``plugin_client.client.ExecSession``."""

    async def send_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]: ...

    async def wait(self) -> ExecResult: ...

    async def close(self) -> None: ...


class PluginExecClient(Protocol):
    """``plugin_client.client.PluginClient.exec``."""

    async def exec(self, request: ExecRequest) -> PluginExecSession: ...


class _Session:
    """One plugin exec session seen as the front's :class:`~vnode.kubelet.backends.ExecSession`."""

    def __init__(self, session: PluginExecSession, what: str, log_fields: Mapping[str, str]) -> None:
        self._session = session
        self._what = what
        self._log_fields = log_fields  # the pod's (logformat.pod_fields)

    async def send_stdin(self, data: bytes) -> None:
        await self._session.send_stdin(data)

    async def close_stdin(self) -> None:
        await self._session.close_stdin()

    async def resize(self, size: TerminalSize) -> None:
        await self._session.resize(size.width, size.height)

    async def output(self) -> AsyncIterator[tuple[OutputChannel, bytes]]:
        async for stream, data in self._session:
            yield ("stderr" if stream == "stderr" else "stdout"), data

    async def wait(self) -> int:
        result = await self._session.wait()
        if result.exit_code is None:
            log.info("%s ended without an exit code: %s", self._what, result.message, extra=self._log_fields)
            raise ExecFailed(result.message, status=result.status)
        return result.exit_code

    async def close(self) -> None:
        await self._session.close()


class PluginExec:
    """:class:`~vnode.kubelet.backends.ExecBackend` over the plugin's exec extension."""

    def __init__(self, plugin: PluginExecClient) -> None:
        self._plugin = plugin

    async def exec(self, spec: ExecSpec) -> _Session:
        request = ExecRequest(
            namespace=spec.namespace,
            pod_uid=spec.pod_uid,
            pod_name=spec.pod,
            container=spec.container,
            command=spec.command,
            stdin=spec.stdin,
            stdout=spec.stdout,
            stderr=spec.stderr,
            tty=spec.tty,
        )
        what = f"exec in {spec.namespace}/{spec.pod}/{spec.container}"
        try:
            session = await self._plugin.exec(request)
        except plugin_errors.ExecNotSupported as error:
            raise ExecNotSupported(error.message) from error
        return _Session(session, what, pod_fields(spec.namespace, spec.pod, spec.pod_uid))

    async def attach(self, spec: ExecSpec) -> _Session:
        raise ExecNotSupported(
            "attach not supported by this plugin: the plugin API's exec extension has no attach"
        )



# ---- usage -----------------------------------------------------------------------------------


@runtime_checkable
class PluginUsageClient(Protocol):
    """``plugin_client.client.PluginClient.usage``."""

    async def usage(self, pods: Sequence[Mapping[str, Any]]) -> list[PodUsage]: ...


def _running_containers(pod: Pod) -> dict[str, datetime | None]:
    """Containers the pod status shows running, with their ``startedAt``."""
    out: dict[str, datetime | None] = {}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        running = (status.get("state") or {}).get("running")
        if isinstance(running, dict):
            started = running.get("startedAt")
            out[str(status.get("name", ""))] = _parse_time(started) if isinstance(started, str) else None
    return out


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PluginUsage:
    """:class:`~vnode.kubelet.backends.UsageSource` over the plugin's usage extension.

    Every call asks the plugin about all pods of the node in one request. Only running pods and
    their running containers are reported (the kubelet reports running containers only); the node
    figures are the sums over the pods. The node's CPU counter must never go back (metrics-server
    drops a node whose counter decreased), so a pod's last cumulative CPU keeps counting after the
    pod ends and after it leaves the node. Rates for ``/stats/summary`` come from the plugin or,
    failing that, from this and the previous answer.
    """

    def __init__(self, pods: PodLookup, plugin: PluginUsageClient,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pods = pods
        self._plugin = plugin
        self._clock = clock
        self.started = clock()
        self._pod_cpu: dict[str, int] = {}  # uid -> the largest cumulative CPU seen
        self._retired_cpu = 0  # CPU of pods that left the node
        self._previous: dict[tuple[str, str], tuple[datetime, int]] = {}  # (uid, container|"") -> last sample
        self._ever_measured = False

    async def usage(self) -> UsageReport | None:
        pods = list(await self._pods.list_pods())
        try:
            answer = await self._plugin.usage(pods) if pods else []
        except plugin_errors.UsageNotSupported:
            return None
        except plugin_errors.PluginError as error:
            raise BackendError(f"usage: plugin unavailable: {error}" if error.transient else f"usage: {error}",
                               status=503 if error.transient else 500) from error
        return self._report(pods, answer)

    def _report(self, pods: Sequence[Pod], answer: Sequence[PodUsage]) -> UsageReport:
        now = self._clock()
        by_uid = {str((p.get("metadata") or {}).get("uid", "")): p for p in pods}
        reported: list[PodFigures] = []
        memory = 0
        stamps: list[datetime] = []
        for usage in answer:
            pod = by_uid.get(usage.uid)
            if pod is None:
                continue  # not (or no longer) on this node
            self._ever_measured = True
            self._pod_cpu[usage.uid] = max(self._pod_cpu.get(usage.uid, 0), usage.cpu_total)
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            figures = self._figures(usage.uid, "", usage.timestamp or now, usage.cpu_total, usage.memory_total, None)
            running = _running_containers(pod)
            containers = tuple(self._container(usage, c, running[c.name], now) for c in usage.containers if c.name in running)
            if not containers:
                continue
            memory += figures.memory_working_set_bytes
            stamps.append(figures.timestamp)
            start = (pod.get("status") or {}).get("startTime")
            reported.append(PodFigures(usage.namespace or str(pod["metadata"].get("namespace", "")),
                                       usage.name or str(pod["metadata"].get("name", "")), usage.uid,
                                       _parse_time(start) if isinstance(start, str) else None, figures, containers))
        for uid in [u for u in self._pod_cpu if u not in by_uid]:
            self._retired_cpu += self._pod_cpu.pop(uid)
            self._previous = {k: v for k, v in self._previous.items() if k[0] != uid}
        node = None
        if self._ever_measured:
            node = self._figures("", "", max(stamps, default=now), self._retired_cpu + sum(self._pod_cpu.values()), memory, None)
        return UsageReport(self.started, node, tuple(reported))

    def _container(self, pod: PodUsage, usage: ContainerUsage, started: datetime | None, now: datetime) -> ContainerFigures:
        figures = self._figures(pod.uid, usage.name, usage.timestamp or pod.timestamp or now,
                                usage.cpu_usage_core_nanoseconds, usage.memory_working_set_bytes, usage.cpu_usage_nano_cores)
        return ContainerFigures(usage.name, usage.start_time or started, figures)

    def _figures(self, uid: str, container: str, when: datetime, cpu: int, memory: int, rate: int | None) -> Figures:
        key = (uid, container)
        previous = self._previous.get(key)
        if rate is None and previous is not None and when > previous[0] and cpu >= previous[1]:
            rate = int((cpu - previous[1]) / (when - previous[0]).total_seconds())
        if previous is None or when > previous[0]:
            self._previous[key] = (when, cpu)
        return Figures(when, cpu, memory, rate)

"""An in-memory interLink plugin for tests, built on ``plugin_client.server``.

Use it wherever a test needs a plugin that is not SLURM::

    backend = FakeBackend()
    async with FakePlugin(backend, f"unix://{short_tmp}/plugin.sock") as plugin:
        ... point the agent (or a PluginClient) at plugin.url ...
        assert backend.create_count(pod_uid) == 1
        backend.finish(pod_uid, exit_codes={"main": 3})   # pod turns Failed with exit code 3
        await plugin.stop()                                # unreachable until plugin.start()

What it does:

- records every call in ``backend.calls`` (on arrival, before any delay or failure), so tests can
  assert "exactly one create per pod" with :meth:`FakeBackend.create_count`;
- creates pods whose containers start Running (``auto_run=False``: Waiting until :meth:`run`);
  init containers are reported Terminated(0); :meth:`finish` terminates containers with exit codes;
- answers status only for pods it knows (unknown pods are left out of the answer), delete of an
  unknown pod with PodNotFound (HTTP 404);
- ``delays[op]`` seconds of delay per call (op = create/delete/status/ping/logs/exec);
  :meth:`fail` makes the next N calls (or all) of an op raise a given PluginError;
- logs per container, with follow mode that streams :meth:`append_log` data until the container ends;
- exec commands: ``echo ARGS`` , ``cat`` (stdin to stdout), ``exit N``, ``stderr TEXT``,
  ``watch-resize`` (prints ``WxH`` per resize until stdin ends), ``sleep SECONDS``; anything else
  exits 127.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from plugin_client.errors import PermanentPluginError, PluginError, PodNotFound
from plugin_client.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateStruct,
    ExecRequest,
    KubeObject,
    LogStruct,
    PingResponse,
    PodStatus,
    RetrievedPodData,
    pod_ref,
)
from plugin_client.server import (
    RunningServer,
    ServerExecSession,
    make_app,
    start_server,
)

__all__ = ["Call", "FakeBackend", "FakePlugin", "FakePod"]

OPS = ("create", "delete", "status", "ping", "logs", "exec")


@dataclass(frozen=True)
class Call:
    """One request the fake received. ``payload`` is the decoded body (RetrievedPodData, pod
    dict, list of pods, LogStruct or ExecRequest; None for a ping)."""

    op: str
    uids: tuple[str, ...]
    payload: Any


@dataclass
class FakePod:
    data: RetrievedPodData
    jid: str
    states: dict[str, ContainerState]
    init_names: tuple[str, ...]
    logs: dict[str, bytearray] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return pod_ref(self.data.pod).uid

    def container_names(self) -> tuple[str, ...]:
        return tuple(self.states)


@dataclass
class _Failure:
    error: PluginError
    remaining: int | None  # None = every call


class FakeBackend:
    """The in-memory plugin backend (see the module docstring)."""

    def __init__(
        self,
        *,
        auto_run: bool = True,
        delays: Mapping[str, float] | None = None,
        ping_response: PingResponse | None = None,
    ) -> None:
        self.auto_run = auto_run
        self.delays: dict[str, float] = dict(delays or {})
        self.ping_response = ping_response
        self.calls: list[Call] = []
        self.pods: dict[str, FakePod] = {}
        self.deleted: list[str] = []
        self.exec_cancelled: list[ExecRequest] = []
        self._failures: dict[str, _Failure] = {}
        self._next_jid = 1000
        self._changed = asyncio.Event()

    # --- test controls ------------------------------------------------------------------------

    def fail(self, op: str, error: PluginError, times: int | None = None) -> None:
        """Make the next ``times`` calls of ``op`` (all of them when None) raise ``error``."""
        assert op in OPS, op
        self._failures[op] = _Failure(error, times)

    def heal(self, op: str | None = None) -> None:
        """Stop failing ``op`` (every op when None)."""
        if op is None:
            self._failures.clear()
        else:
            self._failures.pop(op, None)

    def calls_of(self, op: str, uid: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.op == op and (uid is None or uid in c.uids)]

    def create_count(self, uid: str) -> int:
        """How many creates arrived for this pod UID (the "exactly one" check)."""
        return len(self.calls_of("create", uid))

    def run(self, uid: str) -> None:
        """Every container of the pod Running now."""
        pod = self._pod(uid)
        now = _now()
        for name in pod.states:
            pod.states[name] = ContainerState(running=ContainerStateRunning(started_at=now))
        self._notify()

    def finish(self, uid: str, exit_codes: Mapping[str, int] | int = 0) -> None:
        """Terminate the pod's containers: one exit code for all, or per container name."""
        pod = self._pod(uid)
        now = _now()
        for name, state in pod.states.items():
            code = exit_codes if isinstance(exit_codes, int) else exit_codes.get(name, 0)
            started = state.running.started_at if state.running else now
            pod.states[name] = ContainerState(
                terminated=ContainerStateTerminated(
                    exit_code=code,
                    reason="Completed" if code == 0 else "Error",
                    started_at=started,
                    finished_at=now,
                )
            )
        self._notify()

    def append_log(self, uid: str, container: str, data: bytes) -> None:
        self._pod(uid).logs.setdefault(container, bytearray()).extend(data)
        self._notify()

    async def wait_for_calls(self, op: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until ``count`` calls of ``op`` arrived (test synchronisation, not timing)."""
        async with asyncio.timeout(timeout):
            while len(self.calls_of(op)) < count:
                await self._wait_change()
        return self.calls_of(op)

    # --- PluginBackend --------------------------------------------------------------------------

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        uid = pod_ref(data.pod).uid
        await self._enter("create", (uid,), data)
        spec = data.pod.get("spec") or {}
        names = tuple(c.get("name", "") for c in spec.get("containers") or ())
        init_names = tuple(c.get("name", "") for c in spec.get("initContainers") or ())
        now = _now()
        state = (
            ContainerState(running=ContainerStateRunning(started_at=now))
            if self.auto_run
            else ContainerState(waiting=ContainerStateWaiting(reason="Pending"))
        )
        self._next_jid += 1
        jid = str(self._next_jid)
        self.pods[uid] = FakePod(
            data=data, jid=jid, states={n: state for n in names}, init_names=init_names
        )
        self._notify()
        return CreateStruct(pod_uid=uid, pod_jid=jid)

    async def delete(self, pod: KubeObject) -> None:
        uid = pod_ref(pod).uid
        await self._enter("delete", (uid,), pod)
        if uid not in self.pods:
            raise PodNotFound(f"pod {pod_ref(pod)} not known to this plugin")
        del self.pods[uid]
        self.deleted.append(uid)
        self._notify()

    async def status(self, pods: list[KubeObject]) -> list[PodStatus]:
        uids = tuple(pod_ref(p).uid for p in pods)
        await self._enter("status", uids, pods)
        answer = []
        for uid in uids:
            pod = self.pods.get(uid)
            if pod is None:
                continue
            ref = pod_ref(pod.data.pod)
            answer.append(
                PodStatus(
                    name=ref.name,
                    uid=uid,
                    namespace=ref.namespace,
                    jid=pod.jid,
                    containers=tuple(
                        ContainerStatus(
                            name=name, state=state, ready=state.running is not None, image=""
                        )
                        for name, state in pod.states.items()
                    ),
                    init_containers=tuple(
                        ContainerStatus(
                            name=name,
                            state=ContainerState(
                                terminated=ContainerStateTerminated(exit_code=0, reason="Completed")
                            ),
                        )
                        for name in pod.init_names
                    ),
                )
            )
        return answer

    async def ping(self) -> PingResponse | None:
        await self._enter("ping", (), None)
        return self.ping_response

    async def logs(self, request: LogStruct) -> AsyncIterator[bytes]:
        await self._enter("logs", (request.pod_uid,), request)
        pod = self.pods.get(request.pod_uid)
        if pod is None:
            raise PodNotFound(f"pod {request.namespace}/{request.pod_name} not known to this plugin")
        if request.container_name not in pod.states and request.container_name not in pod.init_names:
            raise PermanentPluginError(
                f"container {request.container_name!r} not in pod {request.pod_name}", status=404
            )
        return self._log_stream(pod, request)

    async def _log_stream(self, pod: FakePod, request: LogStruct) -> AsyncIterator[bytes]:
        name = request.container_name
        data = bytes(pod.logs.get(name, b""))
        if request.opts.tail > 0:
            data = b"".join(data.splitlines(keepends=True)[-request.opts.tail :])
        if request.opts.limit_bytes > 0:
            data = data[: request.opts.limit_bytes]
        yield data
        sent = len(pod.logs.get(name, b""))
        while request.opts.follow and not request.opts.limit_bytes:
            state = pod.states.get(name)
            if pod.uid not in self.pods or (state is not None and state.terminated is not None):
                return
            await self._wait_change()
            current = pod.logs.get(name, bytearray())
            if len(current) > sent:
                yield bytes(current[sent:])
                sent = len(current)

    # --- ExecBackend ---------------------------------------------------------------------------

    async def exec(self, request: ExecRequest, session: ServerExecSession) -> int:
        await self._enter("exec", (request.pod_uid,), request)
        if request.pod_uid not in self.pods:
            raise PodNotFound(f"pod {request.namespace}/{request.pod_name} not known to this plugin")
        try:
            return await self._run_command(request.command, session)
        except asyncio.CancelledError:
            self.exec_cancelled.append(request)
            raise

    async def _run_command(self, command: tuple[str, ...], session: ServerExecSession) -> int:
        program, args = command[0], command[1:]
        if program == "echo":
            await session.write_stdout((" ".join(args) + "\n").encode())
            return 0
        if program == "stderr":
            await session.write_stderr((" ".join(args) + "\n").encode())
            return 0
        if program == "cat":
            async for chunk in session.stdin_chunks():
                await session.write_stdout(chunk)
            return 0
        if program == "exit":
            return int(args[0])
        if program == "sleep":
            await asyncio.sleep(float(args[0]))
            return 0
        if program == "watch-resize":
            watcher = asyncio.ensure_future(self._echo_resizes(session))
            try:
                while await session.read_stdin():
                    pass
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            return 0
        await session.write_stderr(f"{program}: command not found\n".encode())
        return 127

    async def _echo_resizes(self, session: ServerExecSession) -> None:
        async for size in session.resizes():
            await session.write_stdout(f"{size.width}x{size.height}\n".encode())

    # --- internals ----------------------------------------------------------------------------

    async def _enter(self, op: str, uids: tuple[str, ...], payload: Any) -> None:
        self.calls.append(Call(op, uids, payload))
        self._notify()
        delay = self.delays.get(op, 0.0)
        if delay:
            await asyncio.sleep(delay)
        failure = self._failures.get(op)
        if failure is not None:
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self._failures[op]
            raise failure.error

    def _pod(self, uid: str) -> FakePod:
        try:
            return self.pods[uid]
        except KeyError:
            raise AssertionError(f"the fake plugin has no pod {uid}") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


class FakePlugin:
    """A FakeBackend served on real sockets; :meth:`stop`/:meth:`start` make it unreachable and
    reachable again on the same addresses."""

    def __init__(self, backend: FakeBackend, *listen: str) -> None:
        self.backend = backend
        self.listen = list(listen)
        self._server: RunningServer | None = None
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        """The first bound address (``unix:///...`` or ``http://127.0.0.1:PORT``)."""
        return self.urls[0]

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await start_server(make_app(self.backend), self.listen, shutdown_timeout=1.0)
        self.urls = self._server.urls
        # Restart on the very same TCP port, so "reachable again" means the same URL.
        self.listen = list(self.urls)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)

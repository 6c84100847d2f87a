"""A small aiohttp application for writing plugin servers that speak interLink's wire exactly.

A plugin implements :class:`PluginBackend` (and optionally :class:`ExecBackend`,
:class:`SystemInfoBackend`, :class:`UsageBackend`); :func:`make_app` turns it into routes, :func:`start_server` listens on a
unix socket and/or TCP with one runner.

Requests are decoded as interLink's API sends them, and more leniently where older senders differ:

| route          | request                                          | success answer                      |
|----------------|--------------------------------------------------|-------------------------------------|
| ``/create``    | one RetrievedPodData, or a one-element list      | 200 CreateStruct (a one-element list|
|                | (interLink 0.3-0.4)                              | if the request was a list)          |
| ``/delete``    | one v1.Pod                                       | 200 text                            |
| ``/status``    | list of v1.Pod; ``[]``, ``null`` or no body is a | 200 list of PodStatus; for a ping   |
|                | ping                                             | the PingResponse, or ``[]``         |
| ``/getLogs``   | LogStruct                                        | 200 text/plain, streamed            |
| ``/exec``      | WebSocket upgrade (see EXEC.md), only if the     | channel protocol                    |
|                | backend is an ExecBackend                        |                                     |
| ``/system-info`` | only if the backend is a SystemInfoBackend     | 200 JSON                            |
| ``/usage``     | list of v1.Pod (USAGE.md), only if the backend   | 200 list of PodUsage                |
|                | is a UsageBackend; ``[]``/``null``/no body: ``[]``|                                     |

Every route answers any HTTP method, as Go's ``ServeMux`` does. Failures are one-line text bodies:

| raised by the backend (or the decoder)   | HTTP status                                             |
|------------------------------------------|---------------------------------------------------------|
| WireFormatError (bad request body)       | 400, naming the field                                   |
| PodNotFound                              | 404: "this plugin does not know the pod". The agent     |
|                                          | takes it as "already gone" on delete.                   |
| PermanentPluginError                     | its ``status`` if 4xx, else 400                         |
| TransientPluginError                     | its ``status`` if 5xx, else 503                         |
| anything else                            | 500 (logged with its traceback)                         |

Every request runs in an OpenTelemetry SERVER span named ``<METHOD> <route>`` that continues the
caller's W3C trace context (``traceparent``; see :mod:`.tracing`), with the pod's identity on create
and delete; the backend's own spans (a SLURM command) become its children. A no-op unless tracing is
set up.

Log lines about a pod (the create line, the refusal of a create, delete, getLogs or exec, an exec
session's lines) carry its namespace/name/uid, and the job id where known, as
:func:`.logformat.pod_fields`.

A create, delete or status call runs to completion even when the caller disconnects (as in Go's
net/http), so a submitted job is never abandoned half-way; a log stream or exec session ends with
its client.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aiohttp import WSMsgType, web
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from . import channel
from .errors import (
    ExecNotSupported,
    PermanentPluginError,
    PluginError,
    PodNotFound,
    TransientPluginError,
    WireFormatError,
    one_line,
)
from .logformat import pod_fields, pod_fields_of
from .models import (
    CreateStruct,
    ExecRequest,
    KubeObject,
    LogStruct,
    PingResponse,
    PodStatus,
    RetrievedPodData,
    encode,
    parse_json,
    pod_ref,
)
from .tracing import extract, tracer_from
from .usage import PodUsage

__all__ = [
    "BACKEND",
    "ExecBackend",
    "ExecSessionClosed",
    "PluginBackend",
    "RunningServer",
    "ServerExecSession",
    "SystemInfoBackend",
    "UsageBackend",
    "make_app",
    "start_server",
]

log = logging.getLogger(__name__)

# A create carries the pod plus every ConfigMap/Secret it mounts (each up to 1 MiB in etcd);
# aiohttp's 1 MiB default would refuse ordinary pods with a few large ConfigMaps.
MAX_REQUEST_BYTES = 256 * 1024 * 1024

# WebSocket messages are kept well below aiohttp's 4 MiB default receive limit.
MAX_EXEC_CHUNK = 64 * 1024

# Queued stdin messages before the reader stops taking more (backpressure to the client).
STDIN_QUEUE_MESSAGES = 16

# Only the latest terminal size matters; older ones are dropped beyond this.
RESIZE_QUEUE_EVENTS = 8

# Keeps idle exec sessions alive and detects vanished clients.
EXEC_HEARTBEAT_SECONDS = 30.0

# Unix sockets are for the agent and the plugin's own group only.
SOCKET_MODE = 0o660

# At shutdown, in-flight create/delete/status calls get this long to finish (a slow sbatch or
# scancel takes seconds); after that the process exits anyway.
BACKGROUND_SHUTDOWN_SECONDS = 60.0


class PluginBackend(Protocol):
    """What a plugin implements. Raise PodNotFound for pods it does not know (delete, logs);
    raise PermanentPluginError/TransientPluginError with a one-line message for other refusals."""

    async def create(self, data: RetrievedPodData) -> CreateStruct: ...

    async def delete(self, pod: KubeObject) -> None: ...

    async def status(self, pods: list[KubeObject]) -> list[PodStatus]: ...

    async def ping(self) -> PingResponse | None: ...

    def logs(
        self, request: LogStruct
    ) -> AsyncIterator[bytes] | Awaitable[AsyncIterator[bytes]]:
        """An async iterator of log bytes (an async generator, or a coroutine returning one).
        With ``request.opts.follow`` it keeps yielding until the container ends."""
        ...


@runtime_checkable
class ExecBackend(Protocol):
    """A plugin that supports vnode's exec extension: run the command, return its exit code."""

    async def exec(self, request: ExecRequest, session: ServerExecSession) -> int: ...


@runtime_checkable
class SystemInfoBackend(Protocol):
    """A plugin with a ``/system-info`` diagnostics route (the Go SLURM plugin has one)."""

    async def system_info(self) -> Mapping[str, Any]: ...


@runtime_checkable
class UsageBackend(Protocol):
    """A plugin with vnode's usage extension (USAGE.md): CPU and memory of the pods it can
    measure; pods it cannot measure (unknown, not started) are left out."""

    async def usage(self, pods: list[KubeObject]) -> Sequence[PodUsage]: ...


BACKEND: web.AppKey[PluginBackend] = web.AppKey("plugin_backend", PluginBackend)
_BACKGROUND: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("plugin_background")
_TRACER: web.AppKey[Any] = web.AppKey("plugin_tracer")
# The pod a request is about (create, delete, logs, exec), for the lines the middleware and the
# abandoned-call callback write about it.
_POD_LOG_FIELDS: web.RequestKey[dict[str, str]] = web.RequestKey("plugin_pod_log_fields", dict)


def make_app(backend: PluginBackend, *, tracer_provider: Any = None) -> web.Application:
    """The aiohttp application serving ``backend`` on interLink's plugin routes. Spans go to
    ``tracer_provider`` (an OpenTelemetry TracerProvider), or to the global one when None."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_trace_middleware, _error_middleware])
    app[BACKEND] = backend
    app[_TRACER] = tracer_from(tracer_provider, __name__)
    app[_BACKGROUND] = set()
    app.router.add_route("*", "/create", _create)
    app.router.add_route("*", "/delete", _delete)
    app.router.add_route("*", "/status", _status)
    app.router.add_route("*", "/getLogs", _logs)
    if isinstance(backend, ExecBackend):
        app.router.add_route("GET", "/exec", _exec)
    if isinstance(backend, SystemInfoBackend):
        app.router.add_route("*", "/system-info", _system_info)
    if isinstance(backend, UsageBackend):
        app.router.add_route("*", "/usage", _usage)
    app.on_shutdown.append(_wait_background)
    return app


# --- request handling ----------------------------------------------------------------------


@web.middleware
async def _trace_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.path}
    session = request.headers.get("InterLink-Http-Session")
    if session:
        attributes["interlink.session"] = session
    with request.app[_TRACER].start_as_current_span(
        f"{request.method} {route}", context=extract(request.headers), kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


def _annotate_pod(namespace: str, name: str, uid: str) -> None:
    span = get_current_span()
    span.set_attribute("k8s.namespace.name", namespace)
    span.set_attribute("k8s.pod.name", name)
    span.set_attribute("k8s.pod.uid", uid)


@web.middleware
async def _error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except PluginError as error:
        status = _status_for(error)
        fields = request.get(_POD_LOG_FIELDS, {})
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, status, error.message, extra=fields)
        else:
            log.info("%s %s -> %d: %s", request.method, request.path, status, error.message, extra=fields)
        return _text(status, error.message)
    except Exception as error:  # one bad request must not take the plugin down
        log.exception("%s %s failed", request.method, request.path, extra=request.get(_POD_LOG_FIELDS, {}))
        return _text(500, f"internal error: {type(error).__name__}: {error}")


def _status_for(error: PluginError) -> int:
    if isinstance(error, WireFormatError):
        return 400
    if isinstance(error, PodNotFound):
        return 404
    if isinstance(error, ExecNotSupported):
        return 501
    if isinstance(error, PermanentPluginError):
        return error.status if error.status and 400 <= error.status < 500 else 400
    if isinstance(error, TransientPluginError):
        return error.status if error.status and error.status >= 500 else 503
    return 500


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=one_line(message) + "\n", content_type="text/plain")


def _json(value: Any) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


async def _body(request: web.Request) -> bytes:
    return await request.read()


async def _run_to_completion(request: web.Request, work: Awaitable[Any]) -> Any:
    """Run ``work`` so that a caller hanging up cannot cancel it half-way (a submitted job is
    either recorded or rolled back by the backend, never abandoned)."""
    task = asyncio.ensure_future(work)
    background = request.app[_BACKGROUND]
    background.add(task)
    task.add_done_callback(background.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            where = f"{request.method} {request.path}"
            fields = request.get(_POD_LOG_FIELDS, {})
            task.add_done_callback(lambda done: _log_abandoned(where, done, fields))
        raise


def _log_abandoned(where: str, task: asyncio.Task[Any], fields: dict[str, str]) -> None:
    # Nobody receives this answer any more, so it is logged here or nowhere.
    if task.cancelled():
        log.warning("%s: cancelled after its caller left", where, extra=fields)
    elif task.exception() is not None:
        log.warning("%s failed after its caller left: %s", where, task.exception(), extra=fields)
    else:
        log.info("%s finished after its caller left", where, extra=fields)


async def _wait_background(app: web.Application) -> None:
    background: set[asyncio.Task[Any]] = app[_BACKGROUND]
    tasks = list(background)
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=BACKGROUND_SHUTDOWN_SECONDS)
    if pending:
        log.warning("shutting down with %d plugin calls still running", len(pending))


async def _create(request: web.Request) -> web.Response:
    document = parse_json(await _body(request))
    wrapped = isinstance(document, list)
    path = ""
    if wrapped:
        if len(document) != 1:
            raise WireFormatError("", f"expected one RetrievedPodData, got a list of {len(document)}")
        document, path = document[0], "[0]"
    data = RetrievedPodData.from_wire(document, path)
    _annotate_pod(data.ref.namespace, data.ref.name, data.ref.uid)
    request[_POD_LOG_FIELDS] = pod_fields(data.ref.namespace, data.ref.name, data.ref.uid)
    result: CreateStruct = await _run_to_completion(request, request.app[BACKEND].create(data))
    log.info("created %s as job %s", data.ref, result.pod_jid,
             extra=pod_fields(data.ref.namespace, data.ref.name, data.ref.uid, result.pod_jid))
    return _json([result] if wrapped else result)


async def _delete(request: web.Request) -> web.Response:
    document = parse_json(await _body(request))
    if not isinstance(document, dict):
        raise WireFormatError("", "expected a v1.Pod object")
    ref = pod_ref(document)
    _annotate_pod(ref.namespace, ref.name, ref.uid)
    request[_POD_LOG_FIELDS] = pod_fields_of(document)
    await _run_to_completion(request, request.app[BACKEND].delete(document))
    return _text(200, f"pod {pod_ref(document)} deleted")


async def _status(request: web.Request) -> web.Response:
    body = await _body(request)
    document = parse_json(body) if body.strip() else None
    if document is None or document == []:
        ping = await _run_to_completion(request, request.app[BACKEND].ping())
        return _json(ping if ping is not None else [])
    if not isinstance(document, list):
        raise WireFormatError("", "expected a list of v1.Pod")
    for index, pod in enumerate(document):
        if not isinstance(pod, dict):
            raise WireFormatError(f"[{index}]", "expected a v1.Pod object")
    statuses = await _run_to_completion(request, request.app[BACKEND].status(document))
    return _json(list(statuses))


async def _logs(request: web.Request) -> web.StreamResponse:
    document = parse_json(await _body(request))
    log_request = LogStruct.from_wire(document)
    request[_POD_LOG_FIELDS] = pod_fields(log_request.namespace, log_request.pod_name, log_request.pod_uid)
    produced = request.app[BACKEND].logs(log_request)
    stream: AsyncIterator[bytes] = await produced if inspect.isawaitable(produced) else produced
    chunks = stream.__aiter__()
    try:
        # The first chunk is awaited before answering, so PodNotFound and friends still become
        # a proper status code instead of a 200 that breaks off.
        first = await anext(chunks, None)
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.charset = "utf-8"
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            if chunk:
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()


async def _usage(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    assert isinstance(backend, UsageBackend)
    body = await _body(request)
    document = parse_json(body) if body.strip() else None
    if document is None or document == []:
        return _json([])
    if not isinstance(document, list):
        raise WireFormatError("", "expected a list of v1.Pod")
    for index, pod in enumerate(document):
        if not isinstance(pod, dict):
            raise WireFormatError(f"[{index}]", "expected a v1.Pod object")
    usages = await backend.usage(document)
    return _json(list(usages))


async def _system_info(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    assert isinstance(backend, SystemInfoBackend)
    return _json(dict(await backend.system_info()))


# --- exec ----------------------------------------------------------------------------------


class ExecSessionClosed(ConnectionError):
    """The exec client went away; the command should stop."""


@dataclass(eq=False)
class ServerExecSession:
    """The backend's view of an exec: read stdin and terminal sizes, write stdout/stderr."""

    request: ExecRequest
    protocol: str
    _ws: web.WebSocketResponse
    _stdin: asyncio.Queue[bytes] = field(
        default_factory=lambda: asyncio.Queue(STDIN_QUEUE_MESSAGES)
    )
    _resizes: asyncio.Queue[channel.TerminalSize | None] = field(
        default_factory=lambda: asyncio.Queue(RESIZE_QUEUE_EVENTS)
    )
    _stdin_ended: bool = False

    async def read_stdin(self) -> bytes:
        """The next stdin bytes; ``b""`` once the client closed stdin (or never opened it)."""
        if not self.request.stdin or self._stdin_ended:
            return b""
        data = await self._stdin.get()
        if not data:
            self._stdin_ended = True
        return data

    async def stdin_chunks(self) -> AsyncIterator[bytes]:
        """stdin until EOF."""
        while data := await self.read_stdin():
            yield data

    async def resizes(self) -> AsyncIterator[channel.TerminalSize]:
        """Terminal sizes as the client sends them; ends with the session."""
        while (size := await self._resizes.get()) is not None:
            yield size

    async def write_stdout(self, data: bytes) -> None:
        await self._write(channel.STDOUT, data)

    async def write_stderr(self, data: bytes) -> None:
        # With a tty there is no stderr channel: the terminal merges it into stdout.
        await self._write(channel.STDERR if self.request.stderr else channel.STDOUT, data)

    async def _write(self, number: int, data: bytes) -> None:
        for start in range(0, len(data), MAX_EXEC_CHUNK):
            if self._ws.closed:
                raise ExecSessionClosed("exec client disconnected")
            try:
                await self._ws.send_bytes(
                    channel.encode_data(number, data[start : start + MAX_EXEC_CHUNK])
                )
            except ConnectionError as error:
                raise ExecSessionClosed(f"exec client disconnected: {error}") from None

    # Called by the server's reader loop.

    async def _feed(self, message: bytes) -> None:
        decoded = channel.decode_message(message)
        if isinstance(decoded, channel.Close):
            if decoded.channel == channel.STDIN:
                await self._end_stdin()
            return
        if decoded.channel == channel.STDIN and self.request.stdin and decoded.payload:
            await self._stdin.put(decoded.payload)
        elif decoded.channel == channel.RESIZE:
            for size in channel.decode_resize(decoded.payload):
                if self._resizes.full():
                    self._resizes.get_nowait()
                self._resizes.put_nowait(size)

    async def _end_stdin(self) -> None:
        if self.request.stdin:
            await self._stdin.put(b"")

    def _end(self) -> None:
        if self._resizes.full():
            self._resizes.get_nowait()
        self._resizes.put_nowait(None)
        if self._stdin.full():
            return  # the backend is not reading stdin; it will see the closed socket on write
        self._stdin.put_nowait(b"")


async def _exec(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    assert isinstance(backend, ExecBackend)
    exec_request = ExecRequest.from_query(request.query)
    request[_POD_LOG_FIELDS] = _exec_fields(exec_request)
    ws = web.WebSocketResponse(
        protocols=(channel.V5_PROTOCOL, channel.V4_PROTOCOL), heartbeat=EXEC_HEARTBEAT_SECONDS
    )
    if not ws.can_prepare(request).ok:
        raise WireFormatError("", "expected a WebSocket upgrade")
    await ws.prepare(request)
    if ws.ws_protocol not in (channel.V5_PROTOCOL, channel.V4_PROTOCOL):
        await ws.close(message=f"subprotocol {channel.V5_PROTOCOL} required".encode())
        return ws
    session = ServerExecSession(request=exec_request, protocol=ws.ws_protocol, _ws=ws)
    await ws.send_bytes(channel.encode_data(_announce_channel(exec_request)))
    command = asyncio.ensure_future(backend.exec(exec_request, session))
    reader = asyncio.ensure_future(_read_exec_input(ws, session))
    try:
        await asyncio.wait({command, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not command.done():
            # The client went away before the command ended: stop it.
            command.cancel()
            await asyncio.gather(command, return_exceptions=True)
            return ws
        status = _exec_status(exec_request, command)
        if not ws.closed:
            await ws.send_bytes(channel.encode_data(channel.ERROR, channel.encode_status(status)))
            await ws.close()
        return ws
    finally:
        for task in (command, reader):
            if not task.done():
                task.cancel()
        await asyncio.gather(command, reader, return_exceptions=True)


def _announce_channel(request: ExecRequest) -> int:
    # The kubelet sends an empty message on the lowest writable channel once connected.
    if request.stdout:
        return channel.STDOUT
    if request.stderr:
        return channel.STDERR
    return channel.ERROR


def _exec_fields(request: ExecRequest) -> dict[str, str]:
    return pod_fields(request.namespace, request.pod_name, request.pod_uid)


async def _read_exec_input(ws: web.WebSocketResponse, session: ServerExecSession) -> None:
    fields = _exec_fields(session.request)
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                log.info("exec %s: closing on unexpected %s message", session.request.pod_name, message.type.name,
                         extra=fields)
                break
            try:
                await session._feed(message.data)
            except channel.ChannelProtocolError as error:
                log.info("exec %s: %s", session.request.pod_name, error, extra=fields)
                break
    finally:
        session._end()


def _exec_status(request: ExecRequest, command: asyncio.Future[int]) -> dict[str, Any]:
    if command.cancelled():
        return channel.status_failure("command cancelled")
    error = command.exception()
    if error is None:
        code = command.result()
        if isinstance(code, bool) or not isinstance(code, int):
            log.error("exec in %s/%s: the backend returned %r instead of an exit code", request.namespace,
                      request.pod_name, code, extra=_exec_fields(request))
            return channel.status_failure("plugin returned no exit code")
        return channel.status_exit_code(code)
    if isinstance(error, ExecSessionClosed):
        return channel.status_failure(str(error))
    if isinstance(error, PluginError):
        return channel.status_failure(one_line(error.message))
    log.error(
        "exec in %s/%s failed", request.namespace, request.pod_name, exc_info=error, extra=_exec_fields(request)
    )
    return channel.status_failure(f"{type(error).__name__}: {one_line(str(error))}")


# --- listening -----------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A started plugin server; ``urls`` are the bound addresses (real ports for port 0)."""

    runner: web.AppRunner
    urls: list[str]
    socket_paths: list[str]

    async def close(self) -> None:
        """Stop accepting, let in-flight create/delete/status calls finish, remove socket files."""
        await self.runner.cleanup()
        for path in self.socket_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


async def start_server(
    app: web.Application,
    listen: Sequence[str],
    *,
    ssl_context: Any = None,
    shutdown_timeout: float = 10.0,  # time for in-flight calls (a slow sbatch) to finish
) -> RunningServer:
    """Serve ``app`` on every address of ``listen``: ``unix:///path`` (a stale socket file is
    replaced, the socket gets mode 0660), ``http://host:port`` or ``https://host:port`` (needs
    ``ssl_context``). Port 0 picks a free port (see ``RunningServer.urls``)."""
    if not listen:
        raise ValueError("no listen address given")
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=shutdown_timeout, access_log=None
    )
    await runner.setup()
    urls: list[str] = []
    sockets: list[str] = []
    try:
        for address in listen:
            if address.startswith("unix://"):
                path = address[len("unix://") :]
                await _clear_stale_socket(path)
                site: web.BaseSite = web.UnixSite(runner, path)
                await site.start()
                os.chmod(path, SOCKET_MODE)
                sockets.append(path)
                urls.append(f"unix://{path}")
                continue
            scheme, _, rest = address.partition("://")
            host, _, port_text = rest.rstrip("/").rpartition(":")
            if scheme not in ("http", "https") or not host or not port_text.isdigit():
                raise ValueError(
                    f"listen address {address!r} must be unix:///path, http://host:port or https://host:port"
                )
            if scheme == "https" and ssl_context is None:
                raise ValueError(f"listen address {address!r} needs an ssl_context")
            host = host.strip("[]")
            tcp = web.TCPSite(
                runner, host, int(port_text), ssl_context=ssl_context if scheme == "https" else None
            )
            await tcp.start()
            server = tcp._server
            assert server is not None and isinstance(server, asyncio.base_events.Server)
            for sock in server.sockets:
                bound_host, bound_port = sock.getsockname()[:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                urls.append(f"{scheme}://{shown}:{bound_port}")
    except BaseException:
        await runner.cleanup()
        raise
    log.info("plugin server listening on %s", ", ".join(urls))
    return RunningServer(runner=runner, urls=urls, socket_paths=sockets)


async def _clear_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; refusing to replace it")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout=1.0)
    except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
        os.unlink(path)  # nobody listens: a leftover of a process that died
        return
    writer.close()
    raise OSError(f"another server is listening on {path}")


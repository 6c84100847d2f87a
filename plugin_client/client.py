"""The async client the agent uses to reach a plugin, or a real interLink API server.

Two dialects, chosen by configuration; the caller's code is the same for both:

| call   | ``plugin`` dialect (like interLink's API)    | ``interlink`` dialect (like interLink's VK)          |
|--------|----------------------------------------------|------------------------------------------------------|
| create | POST /create, one RetrievedPodData           | POST /create, PodCreateRequests (volume data of all  |
|        |                                              | containers flattened and deduplicated)               |
| delete | POST /delete, the v1.Pod                     | DELETE /delete, the v1.Pod                           |
| status | GET /status, JSON list of v1.Pod             | same                                                 |
| ping   | GET /status with body ``[]``                 | POST /pinglink, no body                              |
| logs   | GET /getLogs, LogStruct, streamed text       | same                                                 |
| exec   | GET /exec WebSocket (vnode extension)        | same (interLink has none: ExecNotSupported)          |
| usage  | GET /usage, JSON list of v1.Pod (vnode        | same (interLink has none: UsageNotSupported)         |
|        | extension, USAGE.md)                         |                                                      |

Every request carries ``Content-Type: application/json``, ``InterLink-Http-Session: <Op>#<n>``,
the caller's W3C trace context (``traceparent``, when tracing is on: :mod:`.tracing`) and, when a
token file is configured and readable, ``Authorization: Bearer <token>`` read from the file on every
call (so a refreshed token is used at once). Create, delete, status, ping and usage calls run in a
CLIENT span ``<METHOD> <path>``. GET requests carry their JSON body as interLink's
do. Every 2xx counts as success (interLink insists on 200; some plugins answer 201).

The client never retries; failures raise the classified errors of :mod:`plugin_client.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import channel
from .channel import ExecResult
from .endpoint import Endpoint, TLSSettings
from .errors import (
    ExecNotSupported,
    PermanentPluginError,
    PluginError,
    PodNotFound,
    TransientPluginError,
    UsageNotSupported,
    WireFormatError,
    one_line,
)
from .models import (
    CreateStruct,
    ExecRequest,
    LogStruct,
    PingResponse,
    PodCreateRequests,
    PodStatus,
    RetrievedPodData,
    encode,
    parse_json,
)
from .podcache import EncodedPods
from .tracing import inject, tracer_from
from .usage import PodUsage

__all__ = [
    "ClientConfig",
    "Dialect",
    "ExecSession",
    "LogStream",
    "PluginClient",
    "Route",
    "Timeouts",
    "routes_for",
]

log = logging.getLogger(__name__)

Dialect = Literal["plugin", "interlink"]

SESSION_HEADER = "InterLink-Http-Session"

# A status answer for 10 000 pods is about 10 MiB; a body beyond this is a broken plugin.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

# Keeps idle exec sessions (an interactive shell) alive through NATs and detects dead peers.
EXEC_HEARTBEAT_SECONDS = 30.0

# stdin is sent in messages of at most this size, far below the receiver's 4 MiB message limit.
MAX_EXEC_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-call limits in seconds, from sending the request to having the whole answer."""

    connect: float = 10.0  # a local socket or LAN peer connects in milliseconds; 10 s means it is gone
    create: float = 120.0  # interLink's ResponseHeaderTimeout; a busy slurmctld can be slow to sbatch
    delete: float = 60.0  # scancel plus removing the job's files
    status: float = 60.0  # one batched call for every pod (squeue + sacct over thousands of jobs)
    ping: float = 10.0  # below the 10 s ping period, so a hung plugin turns the node NotReady quickly
    stream_start: float = 30.0  # logs/exec: until the answer starts; streams themselves have no limit
    usage: float = 30.0  # one batched sstat over every running job; a scrape that waits longer is stale


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How to reach the plugin.

    ``job_script_url`` is sent as ``jobscriptURL`` in the interlink dialect (interLink's
    ``JobScriptBuilderURL``). ``max_connections`` bounds concurrent short calls; log and exec
    streams use their own unbounded pool so that long ``kubectl logs -f`` never block a create.
    """

    endpoint: Endpoint
    dialect: Dialect = "plugin"
    token_file: Path | None = None
    tls: TLSSettings | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    job_script_url: str = ""
    max_connections: int = 64  # well above the agent's worker count; each is one socket


@dataclass(frozen=True, slots=True)
class Route:
    """One call's HTTP method, path and the name used in InterLink-Http-Session."""

    method: str
    path: str
    session_name: str


_PLUGIN_ROUTES = {
    "create": Route("POST", "/create", "CreatePod"),
    "delete": Route("POST", "/delete", "DeletePod"),
    "status": Route("GET", "/status", "GetStatus"),
    "ping": Route("GET", "/status", "Ping"),
    "logs": Route("GET", "/getLogs", "GetLogs"),
    "exec": Route("GET", "/exec", "Exec"),
    "usage": Route("GET", "/usage", "GetUsage"),
}
_INTERLINK_ROUTES = {
    **_PLUGIN_ROUTES,
    "delete": Route("DELETE", "/delete", "DeletePod"),
    "ping": Route("POST", "/pinglink", "Ping"),
}


def routes_for(dialect: Dialect) -> Mapping[str, Route]:
    """The route table of a dialect (op name -> Route)."""
    if dialect == "plugin":
        return _PLUGIN_ROUTES
    if dialect == "interlink":
        return _INTERLINK_ROUTES
    raise ValueError(f"unknown plugin dialect {dialect!r} (expected 'plugin' or 'interlink')")


class PluginClient:
    """An async client for one plugin endpoint. Use ``async with`` or call :meth:`close`."""

    def __init__(self, config: ClientConfig, *, tracer_provider: Any = None,
                 observer: Callable[[str, str, float], None] | None = None) -> None:
        """``tracer_provider``: where this client's spans go (the global provider when None).
        ``observer(op, outcome, seconds)`` is called after every create/delete/status/ping/usage
        call and every log stream's start (metrics); outcome is ``ok`` or the error's class name (``TransientPluginError``,
        ``PodNotFound``, ...)."""
        self.config = config
        self._tracer = tracer_from(tracer_provider, __name__)
        self.observer = observer
        self.routes = routes_for(config.dialect)
        self._endpoint = config.endpoint
        # Building the SSL context reads the CA/cert files once, at construction (start-up).
        self._ssl: Any = (
            (config.tls or TLSSettings()).ssl_context() if config.endpoint.scheme == "https" else None
        )
        self._calls: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self._token_warning_logged = False
        self._last_ping_warning = ""  # a plugin pinged every 10 s repeats the same mistake
        self._encoded_pods = EncodedPods()  # /status bodies repeat the same pods every cycle

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close both connection pools; open log streams and exec sessions end."""
        for session in (self._calls, self._streams):
            if session is not None:
                await session.close()
        self._calls = self._streams = None

    def _make_session(self, limit: int) -> aiohttp.ClientSession:
        connector: aiohttp.BaseConnector
        if self._endpoint.socket_path is not None:
            connector = aiohttp.UnixConnector(path=self._endpoint.socket_path, limit=limit)
        else:
            connector = aiohttp.TCPConnector(limit=limit, ssl=self._ssl if self._ssl else True)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeouts.connect),
            auto_decompress=True,
        )

    def _call_session(self) -> aiohttp.ClientSession:
        if self._calls is None or self._calls.closed:
            self._calls = self._make_session(self.config.max_connections)
        return self._calls

    def _stream_session(self) -> aiohttp.ClientSession:
        if self._streams is None or self._streams.closed:
            self._streams = self._make_session(0)  # 0 = no limit: streams are long-lived
        return self._streams

    # --- the plugin API ---------------------------------------------------------------------

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        """Submit a pod. Returns the plugin's ``{PodUID, PodJID}``.

        A WireFormatError here means the plugin answered 2xx with a malformed body: the remote
        job may exist without a known job id.
        """
        if self.config.dialect == "interlink":
            body = encode(PodCreateRequests.from_pod_data(data, self.config.job_script_url))
        else:
            body = encode(data)
        payload, session = await self._call("create", body, self.config.timeouts.create)
        result: CreateStruct = _decode(
            "create", session, lambda: CreateStruct.from_wire(parse_json(payload))
        )
        return result

    async def delete(self, pod: Mapping[str, Any]) -> None:
        """Delete a pod's remote job. Raises PodNotFound when the plugin does not know the pod."""
        await self._call("delete", encode(pod), self.config.timeouts.delete)

    async def status(self, pods: Sequence[Mapping[str, Any]]) -> list[PodStatus]:
        """Statuses of many pods in one call. An empty list returns ``[]`` without a request
        (an empty list on the wire is a ping)."""
        if not pods:
            return []
        body = self._encoded_pods.pod_list(pods)
        payload, session = await self._call("status", body, self.config.timeouts.status)
        statuses: list[PodStatus] = _decode("status", session, lambda: _status_list(payload))
        return statuses

    async def usage(self, pods: Sequence[Mapping[str, Any]]) -> list[PodUsage]:
        """CPU and memory of many pods in one call (vnode's usage extension, USAGE.md). Pods the
        plugin cannot measure are left out of the answer. An empty list returns ``[]`` without a
        request. Raises UsageNotSupported when the plugin has no ``/usage``."""
        if not pods:
            return []
        payload, session = await self._call("usage", self._encoded_pods.pod_list(pods), self.config.timeouts.usage)
        usages: list[PodUsage] = _decode("usage", session, lambda: _usage_list(payload))
        return usages

    async def ping(self) -> PingResponse | None:
        """Check the plugin is alive. Raises on failure; on success returns its PingResponse, or
        None when it answered something else (``[]``, text, junk), which still means healthy."""
        body = None if self.config.dialect == "interlink" else b"[]"
        payload, session = await self._call("ping", body, self.config.timeouts.ping)
        text = payload.strip()
        if not text.startswith(b"{"):
            return None
        try:
            return PingResponse.from_wire(parse_json(text))
        except WireFormatError as error:
            if error.message != self._last_ping_warning:
                self._last_ping_warning = error.message
                log.warning("plugin ping answer ignored (session %s): %s", session, error.message)
            return None

    async def logs(self, request: LogStruct) -> LogStream:
        """Start a log stream. Errors are raised here, before any byte; iterate the result for the
        bytes (with ``Follow`` it lasts until the plugin ends it or :meth:`LogStream.aclose`).
        The observer sees the time to the start of the stream (a followed stream has no end)."""
        with self._observed("logs"):
            return await self._logs(request)

    @contextmanager
    def _observed(self, op: str) -> Iterator[None]:
        """Report one call to the observer: its op, outcome ("ok", "cancelled" or the PluginError's
        class name) and duration."""
        started = time.monotonic()
        outcome = "ok"
        try:
            yield
        except PluginError as error:
            outcome = type(error).__name__
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self.observer is not None:
                self.observer(op, outcome, time.monotonic() - started)

    async def _logs(self, request: LogStruct) -> LogStream:
        route = self.routes["logs"]
        session_id = _session_id(route)
        try:
            async with asyncio.timeout(self.config.timeouts.stream_start):
                response = await self._stream_session().request(
                    route.method,
                    self._endpoint.url(route.path),
                    data=encode(request),
                    headers=self._headers(session_id),
                    allow_redirects=False,
                )
        except TimeoutError:
            raise TransientPluginError(
                f"{self._endpoint}: no answer within {self.config.timeouts.stream_start:g}s",
                op="logs",
                session=session_id,
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise self._transport_error("logs", session_id, error) from None
        if not 200 <= response.status < 300:
            try:
                async with asyncio.timeout(self.config.timeouts.stream_start):
                    payload = await _read_limited(response)
            except (TimeoutError, aiohttp.ClientError, OSError):
                payload = b""
            finally:
                response.close()
            raise _status_error("logs", response.status, payload, session_id)
        return LogStream(response, session_id)

    async def exec(self, request: ExecRequest) -> ExecSession:
        """Open an exec session through vnode's WebSocket extension (see EXEC.md).

        Raises ExecNotSupported when the plugin has no ``/exec`` or refuses the upgrade.
        """
        route = self.routes["exec"]
        session_id = _session_id(route)
        try:
            async with asyncio.timeout(self.config.timeouts.stream_start):
                ws = await self._stream_session().ws_connect(
                    self._endpoint.url(route.path),
                    method=route.method,
                    params=request.to_query(),
                    protocols=(channel.V5_PROTOCOL,),
                    headers=self._headers(session_id),
                    heartbeat=EXEC_HEARTBEAT_SECONDS,
                )
        except TimeoutError:
            raise TransientPluginError(
                f"{self._endpoint}: exec not started within {self.config.timeouts.stream_start:g}s",
                op="exec",
                session=session_id,
            ) from None
        except aiohttp.WSServerHandshakeError as error:
            raise _handshake_error(error, session_id) from None
        except (aiohttp.ClientError, OSError) as error:
            raise self._transport_error("exec", session_id, error) from None
        if ws.protocol != channel.V5_PROTOCOL:
            await ws.close()
            raise ExecNotSupported(
                f"exec not supported by this plugin: it did not accept {channel.V5_PROTOCOL}",
                op="exec",
                session=session_id,
            )
        return ExecSession(ws, session_id)

    # --- plumbing ---------------------------------------------------------------------------

    def _headers(self, session_id: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", SESSION_HEADER: session_id}
        inject(headers)
        token = self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _read_token(self) -> str:
        path = self.config.token_file
        if path is None:
            return ""
        try:
            # Read on every call, as interLink does, so a refreshed token takes effect at once.
            # A token file is a few hundred bytes in the page cache: reading it inline costs less
            # than handing it to a thread.
            token = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as error:
            if not self._token_warning_logged:
                log.warning(
                    "token file %s unreadable (%s); calling the plugin without Authorization",
                    path,
                    error.strerror,
                )
                self._token_warning_logged = True
            return ""
        if not token and not self._token_warning_logged:
            log.warning("token file %s is empty; calling the plugin without Authorization", path)
            self._token_warning_logged = True
        elif token:
            self._token_warning_logged = False  # warn again if it disappears later
        return token

    async def _call(self, op: str, body: bytes | None, timeout: float) -> tuple[bytes, str]:
        route = self.routes[op]
        with self._tracer.start_as_current_span(
            f"{route.method} {route.path}", kind=SpanKind.CLIENT,
            attributes={"http.request.method": route.method, "url.path": route.path, "vnode.plugin.op": op},
        ) as span, self._observed(op):
            try:
                return await self._call_in_span(op, route, body, timeout)
            except PluginError as error:
                span.set_status(Status(StatusCode.ERROR, str(error)))
                if error.status:
                    span.set_attribute("http.response.status_code", error.status)
                raise

    async def _call_in_span(self, op: str, route: Route, body: bytes | None, timeout: float) -> tuple[bytes, str]:
        session_id = _session_id(route)
        try:
            async with asyncio.timeout(timeout):
                async with self._call_session().request(
                    route.method,
                    self._endpoint.url(route.path),
                    data=body,
                    headers=self._headers(session_id),
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    payload = await _read_limited(response)
        except TimeoutError:
            raise TransientPluginError(
                f"{self._endpoint}: no answer within {timeout:g}s", op=op, session=session_id
            ) from None
        except PluginError as error:
            error.op, error.session = op, session_id
            raise
        except (aiohttp.ClientError, OSError) as error:
            raise self._transport_error(op, session_id, error) from None
        if not 200 <= status < 300:
            raise _status_error(op, status, payload, session_id)
        log.debug("plugin %s ok (session %s, %d bytes)", op, session_id, len(payload))
        return payload, session_id

    def _transport_error(self, op: str, session_id: str, error: BaseException) -> PluginError:
        detail = str(error) or type(error).__name__
        return TransientPluginError(f"{self._endpoint}: {detail}", op=op, session=session_id)


def _session_id(route: Route) -> str:
    return f"{route.session_name}#{secrets.randbelow(1 << 31)}"


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise WireFormatError("", f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _status_error(op: str, status: int, payload: bytes, session_id: str) -> PluginError:
    text = one_line(payload.decode("utf-8", "replace"))
    message = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    kind: type[PluginError]
    if status == 404 and op == "delete":
        kind = PodNotFound
    elif op == "usage" and status in (404, 405, 501):
        kind = UsageNotSupported
    elif status >= 500 or status in (401, 408, 429):
        kind = TransientPluginError
    else:
        kind = PermanentPluginError
    return kind(message, op=op, status=status, session=session_id)


def _handshake_error(error: aiohttp.WSServerHandshakeError, session_id: str) -> PluginError:
    status = error.status
    if status in (101, 200, 404, 405, 501) or not status:
        # No such route, a route that does not upgrade, or an upgrade without our subprotocol.
        return ExecNotSupported(
            f"exec not supported by this plugin (HTTP {status} to the WebSocket upgrade: "
            f"{error.message})",
            op="exec",
            status=status,
            session=session_id,
        )
    if status >= 500 or status in (401, 408, 429):
        return TransientPluginError(
            f"exec upgrade failed: HTTP {status}", op="exec", status=status, session=session_id
        )
    return PermanentPluginError(
        f"exec refused: HTTP {status}", op="exec", status=status, session=session_id
    )


def _decode(op: str, session_id: str, decoder: Any) -> Any:
    try:
        return decoder()
    except WireFormatError as error:
        error.op, error.session = op, session_id
        raise


def _status_list(payload: bytes) -> list[PodStatus]:
    document = parse_json(payload)
    if document is None:
        return []
    if not isinstance(document, list):
        raise WireFormatError("", "expected a JSON list of PodStatus")
    return [PodStatus.from_wire(item, f"[{index}]") for index, item in enumerate(document)]


def _usage_list(payload: bytes) -> list[PodUsage]:
    document = parse_json(payload)
    if document is None:
        return []
    if not isinstance(document, list):
        raise WireFormatError("", "expected a JSON list of PodUsage")
    return [PodUsage.from_wire(item, f"[{index}]") for index, item in enumerate(document)]


class LogStream:
    """The bytes of a log answer, as they arrive. Iterate once; close with :meth:`aclose` (or
    ``async with``) to stop following early."""

    def __init__(self, response: aiohttp.ClientResponse, session_id: str) -> None:
        self._response = response
        self.session = session_id

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                if chunk:
                    yield chunk
        except (aiohttp.ClientError, OSError) as error:
            raise TransientPluginError(
                f"log stream broken: {error or type(error).__name__}", op="logs", session=self.session
            ) from None
        finally:
            self._response.close()

    async def read_all(self) -> bytes:
        """The whole answer (for a non-follow request)."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream's connection cannot be reused.
        self._response.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ExecSession:
    """A running exec: send stdin and resizes, iterate ``(stream, bytes)`` output where stream is
    ``"stdout"`` or ``"stderr"``, then :meth:`wait` for the result.

    :meth:`wait` reads (and discards) output nobody iterated, so it never hangs on an unread stream.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self._ws = ws
        self.session = session_id
        self._status_payload = b""
        self._result: ExecResult | None = None
        self._done = asyncio.Event()
        self._iterating = False
        self._iteration_stopped = asyncio.Event()
        self._stdin_closed = False

    async def send_stdin(self, data: bytes) -> None:
        """Send input; large data is split into messages the plugin accepts."""
        if self._stdin_closed:
            raise PermanentPluginError("stdin already closed", op="exec", session=self.session)
        for start in range(0, len(data), MAX_EXEC_CHUNK):
            await self._send(
                channel.encode_data(channel.STDIN, data[start : start + MAX_EXEC_CHUNK])
            )

    async def close_stdin(self) -> None:
        """Signal end of input (v5 CLOSE of channel 0). Idempotent."""
        if not self._stdin_closed:
            self._stdin_closed = True
            await self._send(channel.encode_close(channel.STDIN))

    async def resize(self, width: int, height: int) -> None:
        await self._send(channel.encode_data(channel.RESIZE, channel.encode_resize(width, height)))

    async def _send(self, message: bytes) -> None:
        if self._done.is_set() or self._ws.closed:
            return  # the command has ended; input no longer matters
        try:
            await self._ws.send_bytes(message)
        except (aiohttp.ClientError, ConnectionError) as error:
            raise TransientPluginError(
                f"exec stream broken: {error}", op="exec", session=self.session
            ) from None

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._output()

    async def _output(self) -> AsyncIterator[tuple[str, bytes]]:
        if self._iterating:
            raise RuntimeError("exec output is already being iterated")
        self._iterating = True
        self._iteration_stopped.clear()
        try:
            while not self._done.is_set():
                item = await self._next_output()
                if item is not None:
                    yield item
        finally:
            self._iterating = False
            self._iteration_stopped.set()

    async def _next_output(self) -> tuple[str, bytes] | None:
        message = await self._ws.receive()
        if message.type == aiohttp.WSMsgType.BINARY:
            try:
                decoded = channel.decode_message(message.data)
            except channel.ChannelProtocolError as error:
                self._finish(ExecResult(None, f"exec protocol error: {error}"))
                await self._ws.close()
                return None
            if isinstance(decoded, channel.Data):
                if decoded.channel == channel.STDOUT and decoded.payload:
                    return "stdout", decoded.payload
                if decoded.channel == channel.STDERR and decoded.payload:
                    return "stderr", decoded.payload
                if decoded.channel == channel.ERROR:
                    self._status_payload += decoded.payload
            return None
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            self._finish(self._result_from_status())
            return None
        if message.type == aiohttp.WSMsgType.ERROR:
            self._finish(ExecResult(None, f"exec stream broken: {self._ws.exception()}"))
            return None
        # Text frames belong to the base64 protocols, which vnode does not negotiate.
        self._finish(ExecResult(None, f"exec protocol error: unexpected {message.type.name} message"))
        await self._ws.close()
        return None

    def _result_from_status(self) -> ExecResult:
        if not self._status_payload:
            return ExecResult(None, "exec stream closed before the command's status arrived")
        try:
            return channel.exec_result(channel.decode_status(self._status_payload))
        except channel.ChannelProtocolError as error:
            return ExecResult(None, str(error))

    def _finish(self, result: ExecResult) -> None:
        if self._result is None:
            self._result = result
        self._done.set()

    async def wait(self) -> ExecResult:
        """The command's result: exit code, or a failure message when there is none.

        While another task iterates the output, this waits for it; otherwise (also after an
        iteration was abandoned half-way) it reads the rest of the output itself and drops it.
        """
        while not self._done.is_set():
            if self._iterating:
                waiters = {
                    asyncio.ensure_future(self._done.wait()),
                    asyncio.ensure_future(self._iteration_stopped.wait()),
                }
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                    await asyncio.gather(*waiters, return_exceptions=True)
            else:
                await self._next_output()
        await self._ws.close()
        assert self._result is not None
        return self._result

    async def close(self) -> None:
        """End the session now (the plugin stops the command)."""
        self._finish(ExecResult(None, "exec session closed by the client"))
        await self._ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

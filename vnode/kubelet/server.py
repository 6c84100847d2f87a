"""The kubelet HTTPS server: TLS, HTTP/1.1 via h11, authn/authz, and routing.

Routes (the kubelet's, see ../shared/reference/kubelet-vk.md §3):

* ``GET /healthz`` and ``GET /pods``
* ``GET /containerLogs/{ns}/{pod}/{container}``
* ``GET|POST /exec/{ns}/{pod}[/{uid}]/{container}`` and ``/attach/...`` (SPDY/3.1 or
  WebSocket upgrade)
* ``GET /metrics/resource`` and ``GET /stats/summary`` (``nodes/metrics``, ``nodes/stats``): pod
  usage from the :class:`~vnode.kubelet.backends.UsageSource`, for metrics-server and kubectl top
  (404 without one, or when the plugin cannot measure usage); other ``/stats`` and ``/metrics``
  paths are authorized but not served (404).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

import h11
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from wsproto.utilities import generate_accept_token

from plugin_client.logformat import pod_fields, pod_fields_of
from vnode.kubelet import requests as rq
from vnode.kubelet import resourcemetrics, status, streamprotocol
from vnode.kubelet.auth import Forbidden, RequestAuthority, Unauthenticated
from vnode.kubelet.backends import (
    BackendError,
    ExecBackend,
    ExecSession,
    ExecSpec,
    LogsSource,
    NotFound,
    Pod,
    PodLookup,
    UsageSource,
)
from vnode.kubelet.execsession import STREAM_CREATION_TIMEOUT
from vnode.kubelet.httpio import ClientGone, HttpConnection
from vnode.kubelet.spdyexec import SpdyExecSession
from vnode.kubelet.tls import ServingTLS
from vnode.kubelet.wsexec import WebSocketExecSession

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)  # a no-op unless the agent set tracing up (plugin_client.tracing)

# A TLS handshake that takes longer than this is a stuck or hostile client.
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class KubeletServerSettings:
    node_name: str
    host: str = "0.0.0.0"  # the apiserver reaches us on the node's InternalIP
    port: int = 10250  # the kubelet's default port; tests pass 0 for an ephemeral one
    stream_creation_timeout: float = STREAM_CREATION_TIMEOUT


@dataclass
class _Request:
    method: str
    target: rq.Target
    headers: dict[str, list[str]] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def container_names(pod: Pod) -> set[str]:
    spec = pod.get("spec") or {}
    names: set[str] = set()
    for key in ("containers", "initContainers", "ephemeralContainers"):
        names.update(c.get("name", "") for c in spec.get(key) or [])
    return names


class KubeletServer:
    def __init__(
        self,
        settings: KubeletServerSettings,
        *,
        tls: ServingTLS,
        authority: RequestAuthority,
        pods: PodLookup,
        logs: LogsSource,
        execs: ExecBackend,
        usage: UsageSource | None = None,
    ) -> None:
        self.settings = settings
        self._usage = usage
        self._tls = tls
        self._authority = authority
        self._pods = pods
        self._logs = logs
        self._execs = execs
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self._port: int | None = None
        # Exec/attach sessions switched so far, by (transport, sub-protocol), e.g.
        # ("websocket", "v5.channel.k8s.io"): shows which path the apiserver took (tests, debugging).
        self.upgrades: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when settings.port is 0); known after start()."""
        assert self._port is not None, "start() first"
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.settings.host, self.settings.port
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("kubelet endpoint listening on %s:%d", self.settings.host, self.port)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- connections --------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._connection(task, reader, writer)
        except asyncio.CancelledError:
            # close() cancels open connections. Ending cancelled would make Python 3.11's
            # start_server callback log a bogus "Unhandled exception in client_connected_cb"
            # (it calls task.exception() on a cancelled task); this task is ours to end.
            if not self._closing:
                raise

    async def _connection(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            # TLS is started per connection so that a rotated certificate applies to new ones.
            await writer.start_tls(self._tls.context(), ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", writer.get_extra_info("peername"), exc)
            writer.close()
            self._connections.discard(task)
            return
        try:
            await self._serve(HttpConnection(reader, writer))
        except (ClientGone, ConnectionError, h11.RemoteProtocolError) as exc:
            log.debug("connection ended: %s", exc)
        except Exception:
            log.exception("kubelet connection failed")
        finally:
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._connections.discard(task)

    async def _serve(self, http: HttpConnection) -> None:
        while True:
            event = await http.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise h11.RemoteProtocolError(f"unexpected {event!r}")
            request = _Request(
                method=event.method.decode("ascii", "replace"),
                target=rq.parse_target(event.target.decode("ascii", "replace")),
            )
            for name, value in event.headers:
                request.headers.setdefault(name.decode().lower(), []).append(value.decode("latin-1"))
            await self._drain_body(http)
            upgraded = await self._handle(http, request)
            if upgraded or http.h11.our_state is h11.MUST_CLOSE:
                return
            if http.h11.our_state is not h11.DONE or http.h11.their_state is not h11.DONE:
                return
            http.h11.start_next_cycle()

    async def _drain_body(self, http: HttpConnection) -> None:
        """Kubelet requests carry no body worth reading; consume and discard it."""
        while True:
            event = await http.next_event()
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                raise ClientGone("closed mid-request")

    async def _handle(self, http: HttpConnection, request: _Request) -> bool:
        """Answer one request; True if the connection was handed to an upgraded protocol.

        Each request is a SERVER span (continuing the apiserver's ``traceparent`` when it sends
        one), so the plugin calls it makes (logs, exec, usage) are its children."""
        first = request.target.path.lstrip("/").split("/", 1)[0]
        with _tracer.start_as_current_span(
            f"{request.method} /{first}", context=propagate.extract({k: v[0] for k, v in request.headers.items()}),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.target.path,
                        "vnode.kubelet.kind": request.target.kind},
        ) as span:
            try:
                return await self._dispatch(http, request)
            except HttpError as exc:
                span.set_attribute("http.response.status_code", exc.status)
                await self._error(http, request, exc.status, exc.message, exc.headers)
            except rq.BadRequest as exc:
                span.set_attribute("http.response.status_code", 400)
                await self._error(http, request, 400, str(exc))
            except rq.Invalid as exc:
                span.set_attribute("http.response.status_code", 422)
                await self._error(http, request, 422, str(exc))
            return False

    async def _error(
        self,
        http: HttpConnection,
        request: _Request,
        code: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if http.h11.our_state is not h11.SEND_RESPONSE:
            raise ClientGone(f"cannot report {code} {message!r} mid-response")
        if request.target.kind in ("exec", "attach"):
            # client-go's upgrader decodes a refused upgrade's body as a Status (trying YAML
            # too, so plain text with a colon would lose its message): send a real Status.
            body = status.encode(status.http_error(code, message))
            await http.respond(code, body, content_type="application/json", extra_headers=headers)
            return
        # Plain text like the kubelet: the apiserver quotes it in the error kubectl prints.
        await http.respond(code, (message + "\n").encode())

    async def _dispatch(self, http: HttpConnection, request: _Request) -> bool:
        peercert = http.writer.get_extra_info("peercert")
        try:
            user = await self._authority.authenticate(peercert, request.header("authorization"))
        except Unauthenticated as exc:
            log.info("401 %s %s: %s", request.method, request.target.path, exc, extra=_path_fields(request.target))
            raise HttpError(401, "Unauthorized") from exc
        try:
            await self._authority.authorize(user, request.method, request.target)
        except Forbidden as exc:
            log.info("403 %s %s: %s", request.method, request.target.path, exc, extra=_path_fields(request.target))
            raise HttpError(403, str(exc)) from exc
        kind = request.target.kind
        if kind == "healthz":
            await http.respond(200, b"ok")
        elif kind == "pods":
            await self._serve_pods(http)
        elif kind == "logs":
            await self._serve_logs(http, request)
        elif kind in ("exec", "attach"):
            return await self._serve_exec(http, request, attach=kind == "attach")
        elif request.target.path.rstrip("/") in ("/metrics/resource", "/stats/summary"):
            await self._serve_usage(http, request)
        else:
            raise HttpError(404, f"{request.target.path} not found")
        return False

    # ---- simple endpoints ---------------------------------------------------------------

    async def _serve_pods(self, http: HttpConnection) -> None:
        items = [dict(p) for p in await self._pods.list_pods()]
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        await http.respond(200, json.dumps(body).encode(), content_type="application/json")

    async def _find(self, ref: rq.PodRef) -> Pod:
        pod = await self._pods.get_pod(ref.namespace, ref.pod)
        if pod is None:
            raise HttpError(404, f"pod {ref.namespace}/{ref.pod} not found on node {self.settings.node_name}")
        uid = (pod.get("metadata") or {}).get("uid", "")
        if ref.uid is not None and ref.uid != uid:
            raise HttpError(404, f"pod {ref.namespace}/{ref.pod} has uid {uid}, not {ref.uid}")
        if ref.container not in container_names(pod):
            raise HttpError(
                404, f"container {ref.container!r} is not valid for pod {ref.namespace}/{ref.pod}"
            )
        return pod

    # ---- usage --------------------------------------------------------------------------

    async def _serve_usage(self, http: HttpConnection, request: _Request) -> None:
        if request.method != "GET":
            raise HttpError(405, f"{request.target.path} supports GET only")
        if self._usage is None:
            raise HttpError(404, f"{request.target.path} not found: this node reports no usage")
        try:
            report = await self._usage.usage()
        except BackendError as exc:
            log.warning("usage for %s: %s", request.target.path, exc)
            raise HttpError(exc.status, str(exc)) from exc
        if report is None:
            raise HttpError(404, f"{request.target.path} not found: the plugin reports no usage")
        if request.target.path.startswith("/metrics"):
            body = resourcemetrics.resource_metrics(report)
            await http.respond(200, body, content_type=resourcemetrics.CONTENT_TYPE)
        else:
            body = resourcemetrics.summary_json(report, self.settings.node_name)
            await http.respond(200, body, content_type="application/json")

    # ---- logs ---------------------------------------------------------------------------

    async def _serve_logs(self, http: HttpConnection, request: _Request) -> None:
        if request.method != "GET":
            raise HttpError(405, "containerLogs supports GET only")
        ref = rq.parse_pod_ref(request.target.path, allow_uid=False)
        options = rq.parse_log_options(request.target.query)
        fields = pod_fields_of(await self._find(ref))
        try:
            stream = await self._logs.logs(ref.namespace, ref.pod, ref.container, options)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc
        except BackendError as exc:
            log.warning("logs of %s/%s/%s: %s", ref.namespace, ref.pod, ref.container, exc, extra=fields)
            raise HttpError(exc.status, str(exc)) from exc
        await http.send(
            h11.Response(
                status_code=200,
                headers=[("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
            )
        )
        try:
            await _stream_until_disconnect(http, _limited(stream, options.limit_bytes))
        except BackendError as exc:
            # Headers are out: the only way left to say "incomplete" is to drop the connection
            # without the terminating chunk, which the apiserver passes on as an error.
            log.warning("logs of %s/%s/%s broke off: %s", ref.namespace, ref.pod, ref.container, exc,
                        extra=fields)
            raise ClientGone(f"log stream failed: {exc}") from exc
        await http.send(h11.EndOfMessage())

    # ---- exec / attach ------------------------------------------------------------------

    async def _serve_exec(self, http: HttpConnection, request: _Request, *, attach: bool) -> bool:
        ref = rq.parse_pod_ref(request.target.path, allow_uid=True)
        options = rq.parse_exec_options(request.target.query, attach=attach)
        pod = await self._find(ref)
        what = "attach" if attach else "exec"
        spec = ExecSpec(
            namespace=ref.namespace,
            pod=ref.pod,
            pod_uid=str((pod.get("metadata") or {}).get("uid", "")),
            container=ref.container,
            command=options.command,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
            tty=options.tty,
        )
        upgrade = (request.header("upgrade") or "").lower()
        fields = pod_fields_of(pod)
        if upgrade == "spdy/3.1":
            return await self._upgrade_spdy(http, request, spec, options, what, fields)
        if upgrade == "websocket":
            return await self._upgrade_websocket(http, request, spec, options, what, fields)
        raise HttpError(400, f"{what} needs a connection upgrade to SPDY/3.1 or websocket")

    def _starter(self, spec: ExecSpec, what: str) -> Callable[[], Awaitable[ExecSession]]:
        if what == "attach":
            return lambda: self._execs.attach(spec)
        return lambda: self._execs.exec(spec)

    async def _upgrade_websocket(
        self,
        http: HttpConnection,
        request: _Request,
        spec: ExecSpec,
        options: rq.ExecOptions,
        what: str,
        fields: dict[str, str],
    ) -> bool:
        key = request.header("sec-websocket-key")
        if not key or request.header("sec-websocket-version") != "13":
            raise HttpError(400, "WebSocket upgrade needs Sec-WebSocket-Key and version 13")
        offered = request.headers.get("sec-websocket-protocol", [])
        if not streamprotocol.offered_protocols(offered):
            raise HttpError(400, f"no Sec-WebSocket-Protocol offered; supported: "
                                 f"{', '.join(streamprotocol.WEBSOCKET_PROTOCOLS)}")
        try:
            protocol = streamprotocol.negotiate(offered, streamprotocol.WEBSOCKET_PROTOCOLS)
        except streamprotocol.NoCommonProtocol as exc:
            raise _protocol_refusal(exc) from exc
        trailing = await http.switch_protocols([
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode()),
            ("Sec-WebSocket-Protocol", protocol),
        ])
        self.upgrades["websocket", protocol] += 1
        log.info("%s %s/%s/%s %s over WebSocket %s", what, spec.namespace, spec.pod,
                 spec.container, list(spec.command), protocol, extra=fields)
        session = WebSocketExecSession(
            http.reader, http.writer, protocol=protocol, options=options,
            start=self._starter(spec, what), what=what, log_fields=fields,
        )
        await session.run(trailing)
        return True

    async def _upgrade_spdy(
        self,
        http: HttpConnection,
        request: _Request,
        spec: ExecSpec,
        options: rq.ExecOptions,
        what: str,
        fields: dict[str, str],
    ) -> bool:
        offered = request.headers.get("x-stream-protocol-version", [])
        try:
            protocol = streamprotocol.negotiate(offered)
        except streamprotocol.NoCommonProtocol as exc:
            raise _protocol_refusal(exc) from exc
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        if offered:
            headers.append(("X-Stream-Protocol-Version", protocol))
        trailing = await http.switch_protocols(headers)
        self.upgrades["spdy", protocol] += 1
        log.info(
            "%s %s/%s/%s %s over SPDY %s", what, spec.namespace, spec.pod, spec.container,
            list(spec.command), protocol, extra=fields,
        )
        session = SpdyExecSession(
            http.reader,
            http.writer,
            protocol=protocol,
            options=options,
            start=self._starter(spec, what),
            what=what,
            log_fields=fields,
            stream_creation_timeout=self.settings.stream_creation_timeout,
        )
        await session.run(trailing)
        return True


def _path_fields(target: rq.Target) -> dict[str, str]:
    """``extra=`` for a line about a refused request: the pod its path names (logs, exec, attach),
    as far as the path tells; the pod itself is not looked up for a client not yet allowed to see it."""
    if target.kind not in ("logs", "exec", "attach"):
        return {}
    try:
        ref = rq.parse_pod_ref(target.path, allow_uid=target.kind != "logs")
    except rq.BadRequest:
        return {}
    return pod_fields(ref.namespace, ref.pod, ref.uid or "")


def _protocol_refusal(exc: streamprotocol.NoCommonProtocol) -> HttpError:
    return HttpError(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports {exc.offered}, "
        f"server accepts {list(exc.supported)}",
        # The kubelet's Handshake lists what it accepts in this header too.
        [("X-Accepted-Stream-Protocol-Versions", ", ".join(exc.supported))],
    )


async def _limited(stream: AsyncIterator[bytes], limit: int | None) -> AsyncIterator[bytes]:
    """Stop after ``limit`` bytes (limitBytes), closing the source early."""
    sent = 0
    try:
        async for chunk in stream:
            if limit is not None and sent + len(chunk) >= limit:
                yield chunk[: limit - sent]
                return
            sent += len(chunk)
            yield chunk
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()


async def _stream_until_disconnect(http: HttpConnection, chunks: AsyncIterator[bytes]) -> None:
    """Send each chunk as it comes (chunked encoding, flushed); stop if the client leaves.

    While a ``follow`` stream idles, only a read notices that the client hung up, so a
    watcher reads the socket concurrently (feeding any bytes to h11 for the next request).
    """

    async def copy() -> None:
        async for chunk in chunks:
            if chunk:
                await http.send(h11.Data(data=chunk))

    async def watch() -> None:
        while True:
            data = await http.reader.read(65536)
            if not data:
                return
            http.feed(data)

    copier = asyncio.create_task(copy(), name="logs-copy")
    watcher = asyncio.create_task(watch(), name="logs-watch")
    try:
        await asyncio.wait({copier, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not copier.done():
            raise ClientGone("client closed the logs stream")
        copier.result()
    finally:
        for task in (copier, watcher):
            task.cancel()
        await asyncio.gather(copier, watcher, return_exceptions=True)

"""The remotecommand (exec/attach) session over WebSocket (``v5``/``v4.channel.k8s.io``).

Used when the apiserver passes WebSocket straight through (Kubernetes >= 1.36 with
``ExtendWebSocketsToKubelet`` and the feature declared by the node) or by direct clients.
WebSocket framing is wsproto's (sans-I/O); the channel framing and Status objects are
``plugin_client.channel``'s. Each binary message is ``[channel][payload]``: 0 stdin, 1
stdout, 2 stderr, 3 error (Status JSON at the end), 4 resize; v5 adds ``[255, channel]`` to
close a channel (stdin EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from plugin_client import channel
from vnode.kubelet import status, streamprotocol
from vnode.kubelet.backends import ExecFailed, ExecSession, TerminalSize
from vnode.kubelet.execsession import LINGER, InputPump, start_backend
from vnode.kubelet.requests import ExecOptions

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# One stdin message or resize is small; 16 MiB bounds a client that never ends a message.
MAX_MESSAGE = 16 * 1024 * 1024

_OUTPUT_CHANNEL = {"stdout": channel.STDOUT, "stderr": channel.STDERR}


class WebSocketExecSession:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        protocol: str,
        options: ExecOptions,
        start: Callable[[], Awaitable[ExecSession]],
        what: str = "exec",
        log_fields: Mapping[str, str] | None = None,
        linger: float = LINGER,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._options = options
        self._start = start
        self._what = what
        self._log_fields = dict(log_fields or {})  # the pod's, for its lines (logformat.pod_fields)
        self._linger = linger
        self._ws: Connection | None = None
        self._input = InputPump(self._log_fields)
        self._peer_gone = asyncio.Event()
        self._message = bytearray()

    async def _send(self, event: Event) -> None:
        assert self._ws is not None
        data = self._ws.send(event)
        if data and not self._writer.is_closing():
            self._writer.write(data)
            await self._writer.drain()

    async def _send_channel(self, number: int, payload: bytes) -> None:
        await self._send(BytesMessage(data=channel.encode_data(number, payload)))

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            while True:
                for event in self._ws.events():
                    if not await self._on_event(event):
                        return
                data = await self._reader.read(READ_SIZE)
                self._ws.receive_data(data or None)
                if not data:
                    for event in self._ws.events():
                        await self._on_event(event)
                    return
        except (ConnectionError, channel.ChannelProtocolError) as exc:
            log.info("%s: WebSocket client error: %s", self._what, exc, extra=self._log_fields)
        finally:
            self._peer_gone.set()

    async def _on_event(self, event: Event) -> bool:
        """Handle one event; False once the client closed."""
        if isinstance(event, BytesMessage):
            self._message += event.data
            if len(self._message) > MAX_MESSAGE:
                raise channel.ChannelProtocolError("message too large")
            if event.message_finished:
                message, self._message = bytes(self._message), bytearray()
                await self._on_message(message)
        elif isinstance(event, TextMessage):
            raise channel.ChannelProtocolError("text messages are not part of the channel protocol")
        elif isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, CloseConnection):
            with contextlib.suppress(Exception):
                await self._send(event.response())
            return False
        return True

    async def _on_message(self, message: bytes) -> None:
        decoded = channel.decode_message(message)
        if isinstance(decoded, channel.Close):
            if decoded.channel == channel.STDIN:
                await self._input.stdin_eof()
        elif decoded.channel == channel.STDIN and self._options.stdin:
            await self._input.stdin(decoded.payload)
        elif decoded.channel == channel.RESIZE and self._options.tty:
            for size in channel.decode_resize(decoded.payload):
                await self._input.resize(TerminalSize(size.width, size.height))

    async def run(self, initial: bytes) -> None:
        self._ws = Connection(ConnectionType.SERVER, trailing_data=initial)
        reader_task = asyncio.create_task(self._read_loop(), name=f"ws-{self._what}-read")
        session: ExecSession | None = None
        try:
            # Announce the session with an empty message on the lowest writable channel, as the
            # kubelet's wsstream does.
            first = channel.STDOUT if self._options.stdout else (
                channel.STDERR if self._options.stderr else channel.ERROR)
            await self._send_channel(first, b"")
            session, failed = await start_backend(self._start, self._what, self._log_fields)
            if session is None:
                assert failed is not None
                await self._finish(failed)
                return
            try:
                code = await self._pump(session)
            except ExecFailed as exc:
                await self._finish(status.from_backend(exc))
                return
            if code is not None:
                await self._finish(status.for_exit(code))
        except ConnectionError as exc:
            log.debug("%s: client connection lost while writing: %s", self._what, exc, extra=self._log_fields)
        finally:
            if session is not None:
                await session.close()
            await self._close(reader_task)

    async def _pump(self, session: ExecSession) -> int | None:
        stdin_task = asyncio.create_task(self._input.run(session), name=f"ws-{self._what}-stdin")
        output_task = asyncio.create_task(self._copy_output(session), name=f"ws-{self._what}-out")
        gone_task = asyncio.ensure_future(self._peer_gone.wait())
        try:
            await asyncio.wait({output_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
            if not output_task.done():
                return None
            output_task.result()
            return await session.wait()
        finally:
            self._input.close()
            for task in (stdin_task, output_task, gone_task):
                task.cancel()
            await asyncio.gather(stdin_task, output_task, gone_task, return_exceptions=True)

    async def _copy_output(self, session: ExecSession) -> None:
        async for name, data in session.output():
            wanted = self._options.stdout if name == "stdout" else self._options.stderr
            if wanted and data:
                await self._send_channel(_OUTPUT_CHANNEL[name], data)

    async def _finish(self, final: status.Status) -> None:
        if streamprotocol.version(self._protocol) >= 4:
            await self._send_channel(channel.ERROR, status.encode(final))
        await self._send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))

    async def _close(self, reader_task: asyncio.Task[None]) -> None:
        self._input.close()
        if not reader_task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader_task), self._linger)
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

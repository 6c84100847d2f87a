"""The remotecommand (exec/attach) session over SPDY/3.1: the asyncio loop around
:class:`vnode.spdy.Connection`.

The client opens one stream per channel, each tagged with a ``streamtype`` header: ``error``
always, then ``stdin``/``stdout``/``stderr`` as requested, and ``resize`` with a tty on v3+.
We SYN_REPLY each at once, wait until all expected streams exist, start the command, copy
bytes both ways, and at the end report the exit status on the error stream (a JSON Status on
v4/v5, plain text on failure only before that), FIN our side of every stream and GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from vnode import spdy
from vnode.kubelet import status, streamprotocol
from vnode.kubelet.backends import ExecFailed, ExecSession
from vnode.kubelet.execsession import (
    LINGER,
    STREAM_CREATION_TIMEOUT,
    InputPump,
    ResizeDecoder,
    start_backend,
)
from vnode.kubelet.requests import ExecOptions

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


def expected_streams(options: ExecOptions, protocol: str) -> set[str]:
    wanted = {"error"}
    if options.stdin:
        wanted.add("stdin")
    if options.stdout:
        wanted.add("stdout")
    if options.stderr and not options.tty:
        wanted.add("stderr")
    if options.tty and streamprotocol.version(protocol) >= 3:
        wanted.add("resize")
    return wanted


class SpdyExecSession:
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
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
        linger: float = LINGER,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._options = options
        self._start = start
        self._what = what
        self._log_fields = dict(log_fields or {})  # the pod's, for its lines (logformat.pod_fields)
        self._stream_timeout = stream_creation_timeout
        self._linger = linger
        self._conn = spdy.Connection(spdy.Role.SERVER)
        self._streams: dict[str, int] = {}
        self._expected = expected_streams(options, protocol)
        self._ready = asyncio.Event()
        self._peer_gone = asyncio.Event()
        self._input = InputPump(self._log_fields)
        self._resize = ResizeDecoder()

    # ---- writing ------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if data and not self._writer.is_closing():
            self._writer.write(data)
            await self._writer.drain()

    # ---- reading ------------------------------------------------------------------------

    async def _read_loop(self, initial: bytes) -> None:
        data = initial
        try:
            while True:
                if data:
                    for event in self._conn.receive_data(data):
                        await self._on_event(event)
                data = await self._reader.read(READ_SIZE)
                if not data:
                    return
        except spdy.ProtocolError as exc:
            log.warning("%s: SPDY protocol error from client: %s", self._what, exc, extra=self._log_fields)
            with contextlib.suppress(ConnectionError):
                await self._write(self._conn.goaway(spdy.GoAwayStatus.PROTOCOL_ERROR))
        except ConnectionError as exc:
            log.debug("%s: client connection lost: %s", self._what, exc, extra=self._log_fields)
        finally:
            self._peer_gone.set()

    async def _on_event(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.SynStream):
            await self._on_stream(event)
        elif isinstance(event, spdy.Data):
            if event.stream_id == self._streams.get("stdin"):
                await self._input.stdin(event.data)
                if event.fin:
                    await self._input.stdin_eof()
            elif event.stream_id == self._streams.get("resize"):
                for size in self._resize.feed(event.data):
                    await self._input.resize(size)
        elif isinstance(event, spdy.Ping) and event.from_peer:
            await self._write(self._conn.ping_ack(event.ping_id))
        elif isinstance(event, spdy.RstStream) and event.stream_id == self._streams.get("stdin"):
            await self._input.stdin_eof()
        # SETTINGS, WINDOW_UPDATE, HEADERS and the client's GOAWAY need no action: the end of
        # the session is driven by the command, and a vanished client by EOF.

    async def _on_stream(self, event: spdy.SynStream) -> None:
        kind = (event.headers.get("streamtype") or [""])[0]
        await self._write(self._conn.reply(event.stream_id))
        if kind not in self._expected or kind in self._streams:
            log.warning("%s: ignoring unexpected stream type %r", self._what, kind, extra=self._log_fields)
            return
        self._streams[kind] = event.stream_id
        if kind == "stdin" and event.fin:
            await self._input.stdin_eof()
        if self._expected <= self._streams.keys():
            self._ready.set()

    # ---- the session --------------------------------------------------------------------

    async def run(self, initial: bytes) -> None:
        reader_task = asyncio.create_task(self._read_loop(initial), name=f"spdy-{self._what}-read")
        session: ExecSession | None = None
        try:
            if not await self._until(self._ready, self._stream_timeout):
                if self._peer_gone.is_set():
                    return  # the client left (or broke the protocol) before opening its streams
                log.warning(
                    "%s: timed out waiting for client to create streams (have %s, want %s)",
                    self._what, sorted(self._streams), sorted(self._expected), extra=self._log_fields,
                )
                with contextlib.suppress(ConnectionError):
                    await self._write(self._conn.goaway())
                return
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

    async def _until(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for ``event``; False on timeout or if the client went away first."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._peer_gone.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return event.is_set()

    async def _pump(self, session: ExecSession) -> int | None:
        """Copy output until the command's streams end; None if the client vanished."""
        stdin_task = asyncio.create_task(self._input.run(session), name=f"spdy-{self._what}-stdin")
        output_task = asyncio.create_task(self._copy_output(session), name=f"spdy-{self._what}-out")
        gone_task = asyncio.ensure_future(self._peer_gone.wait())
        try:
            await asyncio.wait({output_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
            if not output_task.done():
                return None
            output_task.result()  # re-raise a write failure
            return await session.wait()
        finally:
            self._input.close()
            for task in (stdin_task, output_task, gone_task):
                task.cancel()
            await asyncio.gather(stdin_task, output_task, gone_task, return_exceptions=True)

    async def _copy_output(self, session: ExecSession) -> None:
        async for channel, data in session.output():
            stream_id = self._streams.get(channel)
            if stream_id is not None and data:
                await self._write(self._conn.send_data(stream_id, data))

    async def _finish(self, final: status.Status) -> None:
        error_stream = self._streams["error"]
        if streamprotocol.version(self._protocol) >= 4:
            payload = status.encode(final)
        else:  # v1-v3: plain text, and only when something failed
            payload = b"" if final["status"] == "Success" else str(final.get("message", "")).encode()
        out = self._conn.send_data(error_stream, payload, fin=True)
        for stream_id in self._conn.open_stream_ids:
            if self._conn.stream_state(stream_id) in (
                spdy.StreamState.OPEN,
                spdy.StreamState.HALF_CLOSED_REMOTE,
            ):
                out += self._conn.send_data(stream_id, b"", fin=True)
        out += self._conn.goaway()
        await self._write(out)

    async def _close(self, reader_task: asyncio.Task[None]) -> None:
        self._input.close()
        # Let the client read our last frames and hang up first (see LINGER).
        if not reader_task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader_task), self._linger)
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

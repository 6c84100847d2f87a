"""Shared pieces of an exec/attach session, whatever carries it (SPDY or WebSocket).

The transport-specific session feeds :class:`InputPump` with what the client sends and
drives the backend through it, so stdin order, EOF and resizes behave the same on both.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from vnode.kubelet import status
from vnode.kubelet.backends import ExecNotSupported, ExecSession, TerminalSize

log = logging.getLogger(__name__)

# The kubelet's streamCreationTimeout: how long the client has to open its streams.
STREAM_CREATION_TIMEOUT = 30.0
# Queued stdin chunks / resizes before we stop reading from the client (TCP backpressure).
INPUT_QUEUE_ITEMS = 64
# After GOAWAY, how long we keep reading so the client can close first; closing a TLS socket
# with unread input makes the kernel send RST, which can destroy our last frames in flight.
LINGER = 5.0


@dataclass(frozen=True, slots=True)
class _Eof:
    pass


_EOF = _Eof()

InputItem = bytes | TerminalSize | _Eof


class ResizeDecoder:
    """The resize stream: a sequence of JSON ``{"Width":W,"Height":H}`` objects."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._buffer += data.decode("utf-8", errors="replace")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return sizes
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buffer = text
                if len(text) > 4096:  # no terminal size is that long; drop garbage
                    self._buffer = ""
                return sizes
            self._buffer = text[end:]
            if isinstance(obj, dict):
                try:
                    sizes.append(TerminalSize(int(obj.get("Width", 0)), int(obj.get("Height", 0))))
                except (TypeError, ValueError):
                    log.debug("ignoring malformed resize %r", obj)


class InputPump:
    """Client → backend: stdin bytes, stdin EOF and resizes, in arrival order."""

    def __init__(self, log_fields: Mapping[str, str] | None = None) -> None:
        self._queue: asyncio.Queue[InputItem] = asyncio.Queue(INPUT_QUEUE_ITEMS)
        self._log_fields = dict(log_fields or {})  # the pod's, for its lines (logformat.pod_fields)
        self._eof_sent = False
        self._closed = False

    async def stdin(self, data: bytes) -> None:
        if data and not self._eof_sent:
            await self._put(data)

    async def stdin_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            await self._put(_EOF)

    async def resize(self, size: TerminalSize) -> None:
        await self._put(size)

    async def _put(self, item: InputItem) -> None:
        if not self._closed:
            await self._queue.put(item)

    def close(self) -> None:
        """The command is over: drop queued and future input, unblocking the reader."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def run(self, session: ExecSession) -> None:
        """Forward until EOF; a backend that stops taking stdin just ends the forwarding."""
        stdin_open = True
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, TerminalSize):
                    await session.resize(item)
                elif isinstance(item, _Eof):
                    if stdin_open:
                        stdin_open = False
                        await session.close_stdin()
                elif stdin_open:
                    await session.send_stdin(item)
            # Any backend failure (process exited, pipe closed, plugin stream gone) only ends
            # stdin; the output side reports how the command ended.
            except Exception as exc:  # noqa: BLE001
                log.debug("stdin forwarding stopped: %s", exc, extra=self._log_fields)
                stdin_open = False


async def start_backend(
    start: Callable[[], Awaitable[ExecSession]], what: str, log_fields: Mapping[str, str] | None = None
) -> tuple[ExecSession | None, status.Status | None]:
    """Start the backend session, or explain in a Status why not (``log_fields``: the pod's, see
    ``plugin_client.logformat.pod_fields``)."""
    try:
        return await start(), None
    except ExecNotSupported as exc:
        message = str(exc) or f"{what} not supported by this plugin"
        return None, status.failure(message, reason="BadRequest", code=400)
    except Exception as exc:
        log.exception("%s failed to start", what, extra=dict(log_fields or {}))
        return None, status.failure(f"{what} failed: {exc}")

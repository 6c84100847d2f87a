"""A thin asyncio driver around one h11 server connection.

h11 parses and frames HTTP/1.1 without doing I/O; this class moves bytes between it and an
asyncio stream pair, and hands the raw streams over after a ``101 Switching Protocols``.
"""

from __future__ import annotations

import asyncio

import h11

# Request heads of kubelet calls are a few hundred bytes; 64 KiB is h11's own default bound.
MAX_REQUEST_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
# A client that says nothing for this long on a kept-alive connection is dropped.
IDLE_TIMEOUT = 120.0


class ClientGone(Exception):
    pass


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)

    async def next_event(self, timeout: float = IDLE_TIMEOUT) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except (TimeoutError, ConnectionError) as exc:
                raise ClientGone(str(exc)) from exc
            self.h11.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        headers += extra_headers or []
        await self.send(h11.Response(status_code=status, headers=headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Send 101 and return the bytes the client already sent beyond the request."""
        await self.send(h11.InformationalResponse(status_code=101, headers=headers))
        trailing, _closed = self.h11.trailing_data
        return bytes(trailing)

    def feed(self, data: bytes) -> None:
        """Bytes read by someone else while a response streams (see the logs handler)."""
        self.h11.receive_data(data)

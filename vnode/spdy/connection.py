"""A sans-I/O SPDY/3.1 session: bytes in, events out; method calls in, bytes out.

No sockets, tasks or clocks: the caller feeds whatever it read into :meth:`Connection.receive_data`
and writes whatever the other methods return. Each stream follows the table in
``_TRANSITIONS``; any (state, input) pair not in it is a :class:`ProtocolError` when the peer
caused it and a :class:`LocalProtocolError` when our caller did.

Deliberate gaps, matching Go's spdystream (the only peer Kubernetes uses):

* no flow control: WINDOW_UPDATE is surfaced and ignored, and we never send one;
* server push / unidirectional streams are accepted but never initiated;
* every peer protocol violation is treated as a session error (the caller sends GOAWAY and
  closes), rather than resetting just the one stream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vnode.spdy import frames
from vnode.spdy.errors import LocalProtocolError, ProtocolError
from vnode.spdy.events import (
    Data,
    Event,
    GoAway,
    HeadersReceived,
    Ping,
    RstStream,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)
from vnode.spdy.frames import (
    FLAG_FIN,
    FLAG_SETTINGS_CLEAR_SETTINGS,
    FLAG_UNIDIRECTIONAL,
    FRAME_HEADER_SIZE,
    MAX_CONTROL_PAYLOAD,
    ControlHeader,
    FrameType,
    GoAwayStatus,
    RstStatus,
)
from vnode.spdy.headers import HeaderCompressor, HeaderDecompressor, Headers

# 64 KiB keeps the 8-byte frame header negligible while letting a PING echo be written between
# two frames of a large stdout burst without waiting long. Go reads any size up to 2^24-1.
DEFAULT_MAX_OUTBOUND_FRAME = 64 * 1024
# An exec session opens at most 5 streams and a port-forward 2 per forwarded connection; 1000
# bounds per-connection memory against a peer that opens streams and never closes them.
MAX_CONCURRENT_PEER_STREAMS = 1000


class Role(enum.Enum):
    CLIENT = "client"  # opens odd stream ids and odd ping ids
    SERVER = "server"  # opens even ids


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"  # we sent FIN; the peer may still send
    HALF_CLOSED_REMOTE = "half-closed (remote)"  # the peer sent FIN; we may still send
    CLOSED = "closed"


class StreamInput(enum.Enum):
    SEND_DATA = "send data"
    SEND_FIN = "send FIN"
    RECV_DATA = "receive data"
    RECV_FIN = "receive FIN"
    SEND_RST = "send RST_STREAM"
    RECV_RST = "receive RST_STREAM"


_S = StreamState
_I = StreamInput
_TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (_S.OPEN, _I.SEND_DATA): _S.OPEN,
    (_S.OPEN, _I.RECV_DATA): _S.OPEN,
    (_S.OPEN, _I.SEND_FIN): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, _I.RECV_FIN): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_DATA): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_FIN): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_DATA): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_FIN): _S.CLOSED,
    (_S.OPEN, _I.SEND_RST): _S.CLOSED,
    (_S.OPEN, _I.RECV_RST): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.SEND_RST): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_RST): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_RST): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.RECV_RST): _S.CLOSED,
}

_ALLOWED_FLAGS = {
    FrameType.SYN_STREAM: FLAG_FIN | FLAG_UNIDIRECTIONAL,
    FrameType.SYN_REPLY: FLAG_FIN,
    FrameType.HEADERS: FLAG_FIN,
    FrameType.SETTINGS: FLAG_SETTINGS_CLEAR_SETTINGS,
    FrameType.RST_STREAM: 0,
    FrameType.PING: 0,
    FrameType.GOAWAY: 0,
    FrameType.WINDOW_UPDATE: 0,
}


@dataclass(slots=True)
class _Stream:
    stream_id: int
    state: StreamState
    local: bool  # initiated by our side
    replied: bool  # SYN_REPLY sent (peer stream) or received (our stream)


class Connection:
    """One SPDY/3.1 session as seen by one endpoint."""

    def __init__(
        self, role: Role = Role.SERVER, *, max_outbound_frame: int = DEFAULT_MAX_OUTBOUND_FRAME
    ) -> None:
        if not 0 < max_outbound_frame <= frames.MAX_FRAME_PAYLOAD:
            raise ValueError("max_outbound_frame must fit the 24-bit length field")
        self.role = role
        self.max_outbound_frame = max_outbound_frame
        self._parity = 1 if role is Role.CLIENT else 0
        self._next_local_stream = 1 if role is Role.CLIENT else 2
        self._last_peer_stream = 0
        self._streams: dict[int, _Stream] = {}
        self._reset: set[int] = set()  # closed by RST_STREAM: late frames are dropped
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor()
        self._buffer = bytearray()
        # Data frame being read: stream id, bytes still to come, FIN flag, drop payload?
        self._data_stream = 0
        self._data_remaining = 0
        self._data_fin = False
        self._data_drop = False
        self._in_data = False
        self._failed: ProtocolError | None = None
        self.goaway_sent = False
        self.goaway_received = False

    # ---- queries ------------------------------------------------------------------------

    def stream_state(self, stream_id: int) -> StreamState | None:
        """The stream's state, CLOSED for one that existed and ended, None if never seen."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream.state
        if stream_id in self._reset or self._was_opened(stream_id):
            return StreamState.CLOSED
        return None

    def _was_opened(self, stream_id: int) -> bool:
        if stream_id % 2 == self._parity:
            return stream_id < self._next_local_stream
        return 0 < stream_id <= self._last_peer_stream

    @property
    def open_stream_ids(self) -> list[int]:
        return sorted(self._streams)

    # ---- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer; returns the events they complete, in order.

        Raises :class:`ProtocolError` if the peer broke the protocol; every later call then
        raises it again (the session cannot recover: header compression state is lost).
        """
        if self._failed is not None:
            raise ProtocolError(f"session already failed: {self._failed}")
        self._buffer += data
        events: list[Event] = []
        try:
            while self._step(events):
                pass
        except ProtocolError as exc:
            self._failed = exc
            raise
        return events

    def _step(self, events: list[Event]) -> bool:
        """Consume one unit from the buffer; False when more bytes are needed."""
        if self._in_data:
            return self._step_data_payload(events)
        if len(self._buffer) < FRAME_HEADER_SIZE:
            return False
        header = frames.parse_frame_header(bytes(self._buffer[:FRAME_HEADER_SIZE]))
        if isinstance(header, ControlHeader):
            if header.length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(
                    f"control frame type {header.type} of {header.length} bytes exceeds "
                    f"the {MAX_CONTROL_PAYLOAD}-byte limit"
                )
            end = FRAME_HEADER_SIZE + header.length
            if len(self._buffer) < end:
                return False
            payload = bytes(self._buffer[FRAME_HEADER_SIZE:end])
            del self._buffer[:end]
            event = self._on_control(header, payload)
            if event is not None:
                events.append(event)
            return True
        del self._buffer[:FRAME_HEADER_SIZE]
        self._start_data(header, events)
        return True

    def _start_data(self, header: frames.DataHeader, events: list[Event]) -> None:
        sid = header.stream_id
        if sid == 0:
            raise ProtocolError("DATA frame on stream 0")
        if header.flags & ~FLAG_FIN:
            raise ProtocolError(f"DATA frame with unknown flags {header.flags:#x}", stream_id=sid)
        drop = sid in self._reset
        if not drop:
            stream = self._peer_writable(sid, "DATA")
            self._advance(stream, _I.RECV_DATA, remote=True)
        fin = bool(header.flags & FLAG_FIN)
        if header.length == 0:
            self._finish_data(sid, b"", fin, drop, events)
            return
        self._in_data = True
        self._data_stream, self._data_remaining = sid, header.length
        self._data_fin, self._data_drop = fin, drop

    def _step_data_payload(self, events: list[Event]) -> bool:
        if not self._buffer:
            return False
        take = min(self._data_remaining, len(self._buffer))
        chunk = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._data_remaining -= take
        last = self._data_remaining == 0
        if last:
            self._in_data = False
        self._finish_data(
            self._data_stream, chunk, self._data_fin and last, self._data_drop, events
        )
        return True

    def _finish_data(
        self, sid: int, chunk: bytes, fin: bool, drop: bool, events: list[Event]
    ) -> None:
        stream = self._streams.get(sid)
        if drop or stream is None:  # None: our caller reset it while the frame was arriving
            return
        if fin:
            self._advance(stream, _I.RECV_FIN, remote=True)
        events.append(Data(sid, chunk, fin))

    def _peer_writable(self, sid: int, what: str) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            state = "closed" if self._was_opened(sid) else "unknown"
            raise ProtocolError(f"{what} for {state} stream {sid}", stream_id=sid)
        if stream.local and not stream.replied:
            raise ProtocolError(f"{what} on stream {sid} before its SYN_REPLY", stream_id=sid)
        return stream

    def _on_control(self, header: ControlHeader, payload: bytes) -> Event | None:
        try:
            ftype = FrameType(header.type)
        except ValueError:
            return None  # SPDY/3 §2.2.1: unknown control frame types are ignored
        if header.flags & ~_ALLOWED_FLAGS[ftype]:
            raise ProtocolError(f"{ftype.name} frame with unknown flags {header.flags:#x}")
        fin = bool(header.flags & FLAG_FIN)
        if ftype is FrameType.SYN_STREAM:
            return self._on_syn_stream(header.flags, payload)
        if ftype in (FrameType.SYN_REPLY, FrameType.HEADERS):
            sid, block = frames.parse_stream_and_block(payload, ftype.name)
            # Always decompress, even for a stream we drop: the zlib context spans frames.
            headers = self._decompressor.decompress(block)
            if sid in self._reset:
                return None
            if ftype is FrameType.SYN_REPLY:
                return self._on_syn_reply(sid, headers, fin)
            stream = self._peer_writable(sid, "HEADERS")
            self._advance(stream, _I.RECV_DATA, remote=True)
            if fin:
                self._advance(stream, _I.RECV_FIN, remote=True)
            return HeadersReceived(sid, headers, fin)
        if ftype is FrameType.RST_STREAM:
            sid, status = frames.parse_rst_stream(payload)
            reset = self._streams.get(sid)
            if reset is None:
                return None  # already gone on our side; a RST is never answered
            self._advance(reset, _I.RECV_RST, remote=True)
            return RstStream(sid, status)
        if ftype is FrameType.SETTINGS:
            clear = bool(header.flags & FLAG_SETTINGS_CLEAR_SETTINGS)
            return Settings(frames.parse_settings(payload), clear)
        if ftype is FrameType.PING:
            ping_id = frames.parse_ping(payload)
            return Ping(ping_id, from_peer=ping_id % 2 != (1 if self.role is Role.CLIENT else 0))
        if ftype is FrameType.GOAWAY:
            last_good, status = frames.parse_goaway(payload)
            self.goaway_received = True
            return GoAway(last_good, status)
        sid, delta = frames.parse_window_update(payload)
        return WindowUpdate(sid, delta)

    def _on_syn_stream(self, flags: int, payload: bytes) -> Event | None:
        fields = frames.parse_syn_stream(payload)
        headers = self._decompressor.decompress(fields.header_block)
        sid = fields.stream_id
        if sid == 0:
            raise ProtocolError("SYN_STREAM for stream 0")
        if sid % 2 == self._parity:
            who = "odd" if self._parity else "even"
            raise ProtocolError(
                f"peer opened stream {sid} with an {who} id, which only we may use",
                stream_id=sid,
            )
        if sid <= self._last_peer_stream:
            raise ProtocolError(
                f"SYN_STREAM {sid} does not exceed the last stream id {self._last_peer_stream}"
                " (duplicate or out of order)",
                stream_id=sid,
            )
        self._last_peer_stream = sid
        if self.goaway_sent:
            return None  # after our GOAWAY new streams are ignored (SPDY/3 §2.6.6)
        peer_streams = sum(1 for s in self._streams.values() if not s.local)
        if peer_streams >= MAX_CONCURRENT_PEER_STREAMS:
            raise ProtocolError(
                f"peer has more than {MAX_CONCURRENT_PEER_STREAMS} streams open", stream_id=sid
            )
        fin = bool(flags & FLAG_FIN)
        uni = bool(flags & FLAG_UNIDIRECTIONAL)
        state = StreamState.OPEN
        if fin and uni:
            state = StreamState.CLOSED
        elif fin:
            state = StreamState.HALF_CLOSED_REMOTE
        elif uni:
            state = StreamState.HALF_CLOSED_LOCAL
        if state is not StreamState.CLOSED:
            self._streams[sid] = _Stream(sid, state, local=False, replied=False)
        return SynStream(sid, headers, fin, uni, fields.associated_stream_id, fields.priority)

    def _on_syn_reply(self, sid: int, headers: Headers, fin: bool) -> Event:
        stream = self._streams.get(sid)
        if stream is None or not stream.local:
            raise ProtocolError(f"SYN_REPLY for a stream {sid} we did not open", stream_id=sid)
        if stream.replied:
            raise ProtocolError(f"second SYN_REPLY for stream {sid}", stream_id=sid)
        stream.replied = True
        if fin:
            self._advance(stream, _I.RECV_FIN, remote=True)
        return SynReply(sid, headers, fin)

    def _advance(self, stream: _Stream, what: StreamInput, *, remote: bool) -> None:
        new = _TRANSITIONS.get((stream.state, what))
        if new is None:
            message = f"cannot {what.value} on stream {stream.stream_id} in state {stream.state.value}"
            if remote:
                raise ProtocolError(message, stream_id=stream.stream_id)
            raise LocalProtocolError(message)
        stream.state = new
        if new is StreamState.CLOSED:
            del self._streams[stream.stream_id]
            if what in (_I.SEND_RST, _I.RECV_RST):
                self._reset.add(stream.stream_id)

    # ---- sending ------------------------------------------------------------------------

    def open_stream(self, headers: Headers, *, fin: bool = False) -> tuple[int, bytes]:
        """Start a stream of our own (used by the client role and by tests)."""
        if self.goaway_received or self.goaway_sent:
            raise LocalProtocolError("no new streams after GOAWAY")
        sid = self._next_local_stream
        if sid > frames.MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted")
        self._next_local_stream += 2
        state = StreamState.HALF_CLOSED_LOCAL if fin else StreamState.OPEN
        self._streams[sid] = _Stream(sid, state, local=True, replied=False)
        return sid, frames.syn_stream(sid, self._compressor.compress(headers), fin=fin)

    def reply(self, stream_id: int, headers: Headers | None = None, *, fin: bool = False) -> bytes:
        """SYN_REPLY for a stream the peer opened. Returns b"" if the peer already reset it."""
        if stream_id in self._reset:
            return b""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local:
            raise LocalProtocolError(f"no peer stream {stream_id} to reply to")
        if stream.replied:
            raise LocalProtocolError(f"stream {stream_id} was already replied to")
        if fin:
            self._advance(stream, _I.SEND_FIN, remote=False)
        stream.replied = True
        return frames.syn_reply(stream_id, self._compressor.compress(headers or {}), fin=fin)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
        """DATA frames carrying ``data``, at most ``max_outbound_frame`` bytes each.

        Returns b"" for a stream that was reset (the peer cannot want the bytes any more).
        """
        if stream_id in self._reset:
            return b""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"no open stream {stream_id} to send on")
        if not stream.local and not stream.replied:
            raise LocalProtocolError(f"stream {stream_id} needs a SYN_REPLY before data")
        self._advance(stream, _I.SEND_DATA, remote=False)
        if not data and not fin:
            return b""
        size = self.max_outbound_frame
        view = memoryview(data)
        out = []
        offset = 0
        while True:
            chunk = view[offset : offset + size]
            offset += len(chunk)
            last = offset >= len(view)
            out.append(frames.data_frame(stream_id, bytes(chunk), fin=fin and last))
            if last:
                break
        if fin:
            self._advance(stream, _I.SEND_FIN, remote=False)
        return b"".join(out)

    def ping(self, ping_id: int) -> bytes:
        """A PING of our own; ``ping_id`` must have our parity (odd for clients)."""
        if ping_id % 2 != (1 if self.role is Role.CLIENT else 0):
            raise LocalProtocolError(f"ping id {ping_id} has the peer's parity")
        return frames.ping(ping_id)

    def ping_ack(self, ping_id: int) -> bytes:
        """Echo of a peer's PING (spdystream echoes ids whose parity differs from its own)."""
        return frames.ping(ping_id)

    def rst(self, stream_id: int, status: RstStatus = RstStatus.CANCEL) -> bytes:
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._advance(stream, _I.SEND_RST, remote=False)
        else:
            self._reset.add(stream_id)
        return frames.rst_stream(stream_id, status)

    def goaway(self, status: GoAwayStatus = GoAwayStatus.OK) -> bytes:
        """Announce the end of the session; later peer SYN_STREAMs are ignored."""
        self.goaway_sent = True
        return frames.goaway(self._last_peer_stream, status)

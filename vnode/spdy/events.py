"""What a :class:`~vnode.spdy.connection.Connection` reports after reading bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from vnode.spdy.headers import Headers


@dataclass(frozen=True, slots=True)
class SynStream:
    """The peer opened a stream. ``fin``: it will send nothing more on it."""

    stream_id: int
    headers: Headers = field(hash=False)
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SynReply:
    """The peer accepted a stream we opened."""

    stream_id: int
    headers: Headers = field(hash=False)
    fin: bool = False


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    stream_id: int
    headers: Headers = field(hash=False)
    fin: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """Payload bytes of one stream. A frame may arrive as several Data events (we never
    buffer a whole data frame); ``fin`` is set on the last piece of the frame that ends
    the peer's side of the stream."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Settings:
    """``(id, flags, value)`` triples. Surfaced for logging; nothing here needs them."""

    entries: tuple[tuple[int, int, int], ...]
    clear_persisted: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    """``from_peer``: the peer started this ping (its id parity differs from ours), so it
    expects an echo; otherwise it is the answer to one of our pings."""

    ping_id: int
    from_peer: bool


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """SPDY/3.1 flow control. Go's spdystream never sends or honours it, so neither do we:
    surfaced and otherwise ignored."""

    stream_id: int
    delta: int


Event = SynStream | SynReply | HeadersReceived | Data | RstStream | Settings | Ping | GoAway | WindowUpdate

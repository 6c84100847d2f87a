"""SPDY/3.1 frame layout: frame headers, control-frame payloads, and their limits.

Pure functions over bytes. Header blocks stay compressed here; :mod:`vnode.spdy.headers`
handles the zlib layer and :mod:`vnode.spdy.connection` the state.

Wire layout (all integers big-endian):

* control frame: ``1 | version(15) | type(16) | flags(8) | length(24) | payload``
* data frame:    ``0 | stream id(31) | flags(8) | length(24) | payload``
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from vnode.spdy.errors import ProtocolError

SPDY_VERSION = 3
FRAME_HEADER_SIZE = 8
# The length field is 24 bits wide; nothing larger can be expressed on the wire.
MAX_FRAME_PAYLOAD = (1 << 24) - 1
# Stream ids and ping ids are 31-bit (SYN_STREAM) / 32-bit (PING) unsigned integers.
MAX_STREAM_ID = (1 << 31) - 1
# Header blocks of exec/port-forward SYN_STREAMs are well under 1 KiB; 1 MiB is spdystream's
# per-field limit and bounds what a peer can make us buffer before a control frame is whole.
MAX_CONTROL_PAYLOAD = 1 << 20

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01

_CONTROL_BIT = 0x80000000
_STREAM_ID_MASK = 0x7FFFFFFF


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


@dataclass(frozen=True, slots=True)
class ControlHeader:
    type: int  # an int, not FrameType: unknown types must be skippable (SPDY/3 §2.2.1)
    flags: int
    length: int


@dataclass(frozen=True, slots=True)
class DataHeader:
    stream_id: int
    flags: int
    length: int


def parse_frame_header(header: bytes) -> ControlHeader | DataHeader:
    """Decode the 8-byte common header. Rejects a control frame of another SPDY version."""
    if len(header) != FRAME_HEADER_SIZE:
        raise ValueError("a frame header is exactly 8 bytes")
    first, flags_length = struct.unpack(">II", header)
    flags = flags_length >> 24
    length = flags_length & 0xFFFFFF
    if first & _CONTROL_BIT:
        version = (first >> 16) & 0x7FFF
        if version != SPDY_VERSION:
            raise ProtocolError(f"unsupported SPDY version {version} (only 3 is spoken)")
        return ControlHeader(type=first & 0xFFFF, flags=flags, length=length)
    return DataHeader(stream_id=first & _STREAM_ID_MASK, flags=flags, length=length)


def _header(first: int, flags: int, length: int) -> bytes:
    if length > MAX_FRAME_PAYLOAD:
        raise ValueError(f"frame payload of {length} bytes exceeds the 24-bit length field")
    return struct.pack(">II", first, (flags << 24) | length)


def control_frame(frame_type: FrameType, flags: int, payload: bytes) -> bytes:
    first = _CONTROL_BIT | (SPDY_VERSION << 16) | int(frame_type)
    return _header(first, flags, len(payload)) + payload


def data_frame(stream_id: int, payload: bytes, *, fin: bool) -> bytes:
    _check_stream_id(stream_id)
    return _header(stream_id, FLAG_FIN if fin else 0, len(payload)) + payload


def _check_stream_id(stream_id: int) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} is outside 1..2^31-1")


# ---- control payloads ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SynStreamFields:
    stream_id: int
    associated_stream_id: int
    priority: int
    slot: int
    header_block: bytes  # still compressed


def parse_syn_stream(payload: bytes) -> SynStreamFields:
    if len(payload) < 10:
        raise ProtocolError(f"SYN_STREAM payload of {len(payload)} bytes is shorter than 10")
    stream_id, assoc, prio_slot = struct.unpack(">IIH", payload[:10])
    return SynStreamFields(
        stream_id=stream_id & _STREAM_ID_MASK,
        associated_stream_id=assoc & _STREAM_ID_MASK,
        priority=prio_slot >> 13,
        slot=prio_slot & 0xFF,
        header_block=payload[10:],
    )


def syn_stream(
    stream_id: int, header_block: bytes, *, fin: bool = False, priority: int = 0
) -> bytes:
    _check_stream_id(stream_id)
    if not 0 <= priority <= 7:
        raise ValueError("SPDY/3 priority is 3 bits (0..7)")
    payload = struct.pack(">IIH", stream_id, 0, priority << 13) + header_block
    return control_frame(FrameType.SYN_STREAM, FLAG_FIN if fin else 0, payload)


def parse_stream_and_block(payload: bytes, what: str) -> tuple[int, bytes]:
    """SYN_REPLY and HEADERS: a 31-bit stream id followed by a compressed header block."""
    if len(payload) < 4:
        raise ProtocolError(f"{what} payload of {len(payload)} bytes is shorter than 4")
    (stream_id,) = struct.unpack(">I", payload[:4])
    return stream_id & _STREAM_ID_MASK, payload[4:]


def syn_reply(stream_id: int, header_block: bytes, *, fin: bool = False) -> bytes:
    _check_stream_id(stream_id)
    payload = struct.pack(">I", stream_id) + header_block
    return control_frame(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, payload)


def headers_frame(stream_id: int, header_block: bytes, *, fin: bool = False) -> bytes:
    _check_stream_id(stream_id)
    payload = struct.pack(">I", stream_id) + header_block
    return control_frame(FrameType.HEADERS, FLAG_FIN if fin else 0, payload)


def _fixed(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ProtocolError(f"{what} payload must be {size} bytes, got {len(payload)}")


def parse_rst_stream(payload: bytes) -> tuple[int, int]:
    _fixed(payload, 8, "RST_STREAM")
    stream_id, status = struct.unpack(">II", payload)
    stream_id &= _STREAM_ID_MASK
    if stream_id == 0:
        raise ProtocolError("RST_STREAM for stream 0")
    if status == 0:
        raise ProtocolError("RST_STREAM with status 0", stream_id=stream_id)
    return stream_id, status


def rst_stream(stream_id: int, status: RstStatus) -> bytes:
    _check_stream_id(stream_id)
    return control_frame(FrameType.RST_STREAM, 0, struct.pack(">II", stream_id, int(status)))


def parse_settings(payload: bytes) -> tuple[tuple[int, int, int], ...]:
    """Returns ``(id, flags, value)`` triples."""
    if len(payload) < 4:
        raise ProtocolError("SETTINGS payload shorter than its 4-byte entry count")
    (count,) = struct.unpack(">I", payload[:4])
    if len(payload) != 4 + 8 * count:
        raise ProtocolError(
            f"SETTINGS says {count} entries but carries {len(payload) - 4} bytes of them"
        )
    out = []
    for offset in range(4, len(payload), 8):
        flags_id, value = struct.unpack(">II", payload[offset : offset + 8])
        out.append((flags_id & 0xFFFFFF, flags_id >> 24, value))
    return tuple(out)


def settings(entries: tuple[tuple[int, int, int], ...] = ()) -> bytes:
    body = struct.pack(">I", len(entries)) + b"".join(
        struct.pack(">II", (flags << 24) | setting_id, value)
        for setting_id, flags, value in entries
    )
    return control_frame(FrameType.SETTINGS, 0, body)


def parse_ping(payload: bytes) -> int:
    _fixed(payload, 4, "PING")
    ping_id: int = struct.unpack(">I", payload)[0]
    if ping_id == 0:
        raise ProtocolError("PING with id 0")
    return ping_id


def ping(ping_id: int) -> bytes:
    if not 0 < ping_id < (1 << 32):
        raise ValueError("ping id is a non-zero 32-bit integer")
    return control_frame(FrameType.PING, 0, struct.pack(">I", ping_id))


def parse_goaway(payload: bytes) -> tuple[int, int]:
    _fixed(payload, 8, "GOAWAY")
    last_good, status = struct.unpack(">II", payload)
    return last_good & _STREAM_ID_MASK, status


def goaway(last_good_stream_id: int, status: GoAwayStatus = GoAwayStatus.OK) -> bytes:
    body = struct.pack(">II", last_good_stream_id & _STREAM_ID_MASK, int(status))
    return control_frame(FrameType.GOAWAY, 0, body)


def parse_window_update(payload: bytes) -> tuple[int, int]:
    _fixed(payload, 8, "WINDOW_UPDATE")
    stream_id, delta = struct.unpack(">II", payload)
    delta &= 0x7FFFFFFF
    if delta == 0:
        raise ProtocolError("WINDOW_UPDATE with a zero delta")
    return stream_id & _STREAM_ID_MASK, delta


def window_update(stream_id: int, delta: int) -> bytes:
    return control_frame(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))

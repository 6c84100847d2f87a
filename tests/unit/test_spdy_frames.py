"""SPDY/3.1 frame layout: headers and control payloads, bit for bit."""

from __future__ import annotations

import struct

import pytest

from vnode.spdy import ProtocolError, frames
from vnode.spdy.frames import (
    ControlHeader,
    DataHeader,
    FrameType,
    GoAwayStatus,
    RstStatus,
)


def test_control_frame_header_has_the_control_bit_and_version_3() -> None:
    raw = frames.ping(7)
    assert raw[:2] == b"\x80\x03"
    assert frames.parse_frame_header(raw[:8]) == ControlHeader(FrameType.PING, 0, 4)


def test_data_frame_header_carries_stream_id_flags_and_length() -> None:
    raw = frames.data_frame(5, b"hello", fin=True)
    assert raw == b"\x00\x00\x00\x05\x01\x00\x00\x05hello"
    assert frames.parse_frame_header(raw[:8]) == DataHeader(5, frames.FLAG_FIN, 5)


@pytest.mark.parametrize("version", [1, 2, 4, 0x7FFF])
def test_control_frame_of_another_version_is_rejected(version: int) -> None:
    header = struct.pack(">HHI", 0x8000 | version, FrameType.PING, 4)
    with pytest.raises(ProtocolError, match=f"version {version}"):
        frames.parse_frame_header(header)


def test_syn_stream_round_trip_keeps_priority_and_block() -> None:
    raw = frames.syn_stream(3, b"BLOCK", fin=True, priority=5)
    header = frames.parse_frame_header(raw[:8])
    assert header == ControlHeader(FrameType.SYN_STREAM, frames.FLAG_FIN, 10 + 5)
    fields = frames.parse_syn_stream(raw[8:])
    assert (fields.stream_id, fields.priority, fields.header_block) == (3, 5, b"BLOCK")


def test_syn_reply_round_trip() -> None:
    raw = frames.syn_reply(9, b"xyz")
    assert frames.parse_stream_and_block(raw[8:], "SYN_REPLY") == (9, b"xyz")


def test_rst_goaway_window_update_and_settings_round_trip() -> None:
    assert frames.parse_rst_stream(frames.rst_stream(3, RstStatus.CANCEL)[8:]) == (3, 5)
    assert frames.parse_goaway(frames.goaway(7, GoAwayStatus.INTERNAL_ERROR)[8:]) == (7, 2)
    assert frames.parse_window_update(frames.window_update(1, 1000)[8:]) == (1, 1000)
    entries = ((4, 0, 100), (7, 1, 65536))
    assert frames.parse_settings(frames.settings(entries)[8:]) == entries


def test_the_reserved_high_bit_of_stream_ids_is_ignored_on_read() -> None:
    payload = struct.pack(">II", 0x80000003, 5)
    assert frames.parse_rst_stream(payload) == (3, 5)


@pytest.mark.parametrize(
    ("parser", "payload", "message"),
    [
        (frames.parse_syn_stream, b"\x00" * 9, "shorter than 10"),
        (frames.parse_rst_stream, b"\x00" * 7, "must be 8"),
        (frames.parse_rst_stream, struct.pack(">II", 0, 1), "stream 0"),
        (frames.parse_rst_stream, struct.pack(">II", 1, 0), "status 0"),
        (frames.parse_ping, b"\x00" * 5, "must be 4"),
        (frames.parse_ping, b"\x00" * 4, "id 0"),
        (frames.parse_goaway, b"\x00" * 4, "must be 8"),
        (frames.parse_window_update, struct.pack(">II", 1, 0), "zero delta"),
        (frames.parse_settings, b"\x00\x00", "entry count"),
        (frames.parse_settings, struct.pack(">I", 2) + b"\x00" * 8, "says 2 entries"),
    ],
)
def test_malformed_control_payloads_are_protocol_errors(parser, payload, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=message):
        parser(payload)


def test_writers_refuse_values_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError):
        frames.data_frame(0, b"", fin=False)
    with pytest.raises(ValueError):
        frames.data_frame(1, b"x" * (frames.MAX_FRAME_PAYLOAD + 1), fin=False)
    with pytest.raises(ValueError):
        frames.syn_stream(1, b"", priority=8)
    with pytest.raises(ValueError):
        frames.ping(0)

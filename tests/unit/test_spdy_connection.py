"""The SPDY/3.1 session: two in-memory peers, stream states, and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnode.spdy import (
    Connection,
    Data,
    GoAway,
    HeadersReceived,
    LocalProtocolError,
    Ping,
    ProtocolError,
    Role,
    RstStatus,
    RstStream,
    Settings,
    StreamState,
    SynReply,
    SynStream,
    WindowUpdate,
    frames,
)
from vnode.spdy.events import Event
from vnode.spdy.frames import FrameType
from vnode.spdy.headers import HeaderCompressor


def pair() -> tuple[Connection, Connection]:
    return Connection(Role.CLIENT), Connection(Role.SERVER)


def coalesce(events: list[Event]) -> list[Event]:
    """Merge consecutive Data pieces of one stream, so byte-wise and bulk feeding compare."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if (
            isinstance(event, Data)
            and isinstance(last, Data)
            and last.stream_id == event.stream_id
            and not last.fin
        ):
            out[-1] = Data(event.stream_id, last.data + event.data, event.fin)
        else:
            out.append(event)
    return out


def exec_like_session(client: Connection, server: Connection) -> tuple[bytes, bytes, list[int]]:
    """Client opens error/stdin/stdout streams the way client-go does; returns the wire bytes."""
    wire = b""
    ids = []
    for kind in ("error", "stdin", "stdout"):
        sid, raw = client.open_stream({"streamtype": [kind]})
        ids.append(sid)
        wire += raw
    wire += client.send_data(ids[1], b"hello ", fin=False)
    wire += client.send_data(ids[1], b"world", fin=True)
    wire += client.ping(1)
    return wire, b"", ids


def test_client_streams_arrive_as_syn_streams_then_data() -> None:
    client, server = pair()
    wire, _, _ = exec_like_session(client, server)
    events = coalesce(server.receive_data(wire))
    assert events == [
        SynStream(1, {"streamtype": ["error"]}),
        SynStream(3, {"streamtype": ["stdin"]}),
        SynStream(5, {"streamtype": ["stdout"]}),
        Data(3, b"hello world", fin=True),
        Ping(1, from_peer=True),
    ]
    assert server.stream_state(3) is StreamState.HALF_CLOSED_REMOTE
    assert server.stream_state(5) is StreamState.OPEN


def test_feeding_one_byte_at_a_time_gives_the_same_events() -> None:
    client, bulk = pair()
    wire, _, _ = exec_like_session(client, bulk)
    whole = coalesce(bulk.receive_data(wire))
    bytewise = Connection(Role.SERVER)
    events: list[Event] = []
    for i in range(len(wire)):
        events += bytewise.receive_data(wire[i : i + 1])
    assert coalesce(events) == whole


def test_server_reply_and_data_reach_the_client_and_close_the_stream() -> None:
    client, server = pair()
    sid, raw = client.open_stream({"streamtype": ["stdout"]}, fin=True)
    server.receive_data(raw)
    out = server.reply(sid, {"x": ["y"]}) + server.send_data(sid, b"abc", fin=True)
    assert coalesce(client.receive_data(out)) == [
        SynReply(sid, {"x": ["y"]}),
        Data(sid, b"abc", fin=True),
    ]
    assert server.stream_state(sid) is StreamState.CLOSED
    assert client.stream_state(sid) is StreamState.CLOSED
    assert server.open_stream_ids == []


def test_large_data_is_split_at_the_outbound_frame_limit() -> None:
    client, _ = pair()
    server = Connection(Role.SERVER, max_outbound_frame=1000)
    sid, raw = client.open_stream({"streamtype": ["stdout"]})
    server.receive_data(raw)
    client.receive_data(server.reply(sid))
    out = server.send_data(sid, bytes(range(256)) * 10, fin=True)
    assert out.count(b"\x00\x00\x00\x01\x00\x00\x03\xe8") == 2  # two full 1000-byte frames
    events = client.receive_data(out)
    assert b"".join(e.data for e in events if isinstance(e, Data)) == bytes(range(256)) * 10
    assert [e.fin for e in events] == [False, False, True]


def test_empty_fin_is_one_empty_data_frame() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    client.receive_data(server.reply(sid))
    out = server.send_data(sid, b"", fin=True)
    assert out == frames.data_frame(sid, b"", fin=True)
    assert client.receive_data(out) == [Data(sid, b"", fin=True)]


def test_pings_report_who_started_them() -> None:
    client, server = pair()
    assert server.receive_data(client.ping(5)) == [Ping(5, from_peer=True)]
    assert client.receive_data(server.ping_ack(5)) == [Ping(5, from_peer=False)]
    assert client.receive_data(server.ping(2)) == [Ping(2, from_peer=True)]
    with pytest.raises(LocalProtocolError):
        server.ping(3)


def test_settings_window_update_and_goaway_are_surfaced() -> None:
    client, server = pair()
    wire = frames.settings(((4, 0, 100),)) + frames.window_update(0, 5) + client.goaway()
    assert server.receive_data(wire) == [
        Settings(((4, 0, 100),)),
        WindowUpdate(0, 5),
        GoAway(0, 0),
    ]
    assert server.goaway_received


def test_unknown_control_frame_types_are_skipped() -> None:
    client, server = pair()
    unknown = frames.control_frame(FrameType.PING, 0, b"")[:4] + b"\x00\x00\x00\x03abc"
    unknown = b"\x80\x03\x00\x0a" + unknown[4:]  # type 10 (CREDENTIAL)
    assert server.receive_data(unknown + client.ping(1)) == [Ping(1, from_peer=True)]


def test_peer_reset_closes_the_stream_and_later_sends_are_dropped() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    assert server.receive_data(client.rst(sid, RstStatus.CANCEL)) == [RstStream(sid, 5)]
    assert server.stream_state(sid) is StreamState.CLOSED
    assert server.reply(sid) == b""
    assert server.send_data(sid, b"late", fin=True) == b""


def test_data_arriving_after_our_reset_is_ignored() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    server.rst(sid, RstStatus.CANCEL)
    # the client has not seen the RST yet and keeps sending
    late = client.send_data(sid, b"in flight", fin=True)
    assert server.receive_data(late) == []


def test_new_streams_after_our_goaway_are_ignored() -> None:
    client, server = pair()
    server.goaway()
    _, raw = client.open_stream({"a": ["b"]})
    assert server.receive_data(raw) == []


def test_headers_frame_is_surfaced_and_can_end_the_stream() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    block = client._compressor.compress({"k": ["v"]})  # the client's own zlib context
    assert server.receive_data(frames.headers_frame(sid, block, fin=True)) == [
        HeadersReceived(sid, {"k": ["v"]}, fin=True)
    ]


# ---- things our caller must not do ------------------------------------------------------


def test_sending_data_before_the_reply_is_a_local_error() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    with pytest.raises(LocalProtocolError, match="SYN_REPLY"):
        server.send_data(sid, b"x")


def test_replying_twice_or_to_unknown_streams_is_a_local_error() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    server.reply(sid)
    with pytest.raises(LocalProtocolError, match="already"):
        server.reply(sid)
    with pytest.raises(LocalProtocolError):
        server.reply(99)


def test_sending_after_our_fin_is_a_local_error() -> None:
    client, server = pair()
    sid, raw = client.open_stream({})
    server.receive_data(raw)
    server.reply(sid)
    server.send_data(sid, b"", fin=True)
    with pytest.raises(LocalProtocolError, match="half-closed"):
        server.send_data(sid, b"more")


# ---- malformed input from the peer --------------------------------------------------------


def syn(sid: int, comp: HeaderCompressor | None = None, flags: int = 0) -> bytes:
    block = (comp or HeaderCompressor()).compress({"streamtype": ["x"]})
    payload = struct.pack(">IIH", sid, 0, 0) + block
    return frames.control_frame(FrameType.SYN_STREAM, flags, payload)


def rejects(wire: bytes, match: str) -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(ProtocolError, match=match):
        server.receive_data(wire)
    with pytest.raises(ProtocolError, match="already failed"):
        server.receive_data(b"")


def test_bad_version_is_rejected() -> None:
    rejects(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", "version 2")


def test_fixed_size_frames_with_a_bad_length_are_rejected() -> None:
    rejects(b"\x80\x03\x00\x06\x00\x00\x00\x05\x00\x00\x00\x01\x00", "PING payload must be 4")


def test_oversized_control_frames_are_rejected_before_buffering() -> None:
    rejects(b"\x80\x03\x00\x01\x00\xff\xff\xff", "exceeds")


def test_data_for_an_unknown_stream_is_rejected() -> None:
    rejects(frames.data_frame(1, b"x", fin=False), "unknown stream 1")


def test_data_for_a_stream_the_peer_already_finished_is_rejected() -> None:
    comp = HeaderCompressor()
    wire = syn(1, comp) + frames.data_frame(1, b"", fin=True) + frames.data_frame(1, b"x", fin=False)
    rejects(wire, "half-closed")


def test_data_for_a_fully_closed_stream_is_rejected() -> None:
    client, server = pair()
    sid, raw = client.open_stream({}, fin=True)
    server.receive_data(raw)
    server.reply(sid, fin=True)
    with pytest.raises(ProtocolError, match="closed stream 1"):
        server.receive_data(frames.data_frame(sid, b"x", fin=False))


def test_data_on_stream_zero_or_with_unknown_flags_is_rejected() -> None:
    rejects(b"\x00\x00\x00\x00\x00\x00\x00\x00", "stream 0")
    comp = HeaderCompressor()
    rejects(syn(1, comp) + b"\x00\x00\x00\x01\x02\x00\x00\x00", "unknown flags")


def test_duplicate_stream_ids_are_rejected() -> None:
    comp = HeaderCompressor()
    rejects(syn(1, comp) + syn(1, comp), "duplicate")


def test_decreasing_stream_ids_are_rejected() -> None:
    comp = HeaderCompressor()
    rejects(syn(5, comp) + syn(3, comp), "does not exceed")


def test_even_stream_id_from_a_client_is_rejected() -> None:
    rejects(syn(2), "even id")


def test_stream_zero_syn_stream_is_rejected() -> None:
    rejects(syn(0), "stream 0")


def test_undecompressable_header_block_is_rejected() -> None:
    payload = struct.pack(">IIH", 1, 0, 0) + b"\x78\xbb\xde\xad\xbe\xef"
    rejects(frames.control_frame(FrameType.SYN_STREAM, 0, payload), "decompress")


def test_unknown_control_flags_are_rejected() -> None:
    rejects(frames.control_frame(FrameType.PING, 0x01, b"\x00\x00\x00\x01"), "unknown flags")


def test_syn_reply_for_a_stream_we_did_not_open_is_rejected() -> None:
    block = HeaderCompressor().compress({})
    rejects(frames.syn_reply(1, block), "did not open")


def test_data_before_syn_reply_on_our_own_stream_is_rejected() -> None:
    client, _ = pair()
    sid, _ = client.open_stream({})
    with pytest.raises(ProtocolError, match="before its SYN_REPLY"):
        client.receive_data(frames.data_frame(sid, b"x", fin=False))


# ---- fuzzing: only ProtocolError may escape -------------------------------------------------


def valid_prefix() -> bytes:
    client, _ = pair()
    wire = b""
    for kind in ("error", "stdin"):
        _, raw = client.open_stream({"streamtype": [kind]})
        wire += raw
    return wire + client.send_data(3, b"data") + client.ping(1)


@settings(max_examples=400, deadline=None)
@given(noise=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=200))
def test_arbitrary_bytes_only_ever_raise_protocol_error(noise: bytes, cut: int) -> None:
    prefix = valid_prefix()
    server = Connection(Role.SERVER)
    try:
        server.receive_data(prefix[:cut] + noise)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_single_byte_corruptions_only_ever_raise_protocol_error(
    position: int, value: int, chunk: int
) -> None:
    wire = bytearray(valid_prefix())
    wire[position % len(wire)] = value
    server = Connection(Role.SERVER)
    try:
        for i in range(0, len(wire), chunk):
            server.receive_data(bytes(wire[i : i + chunk]))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=8),
    split=st.integers(min_value=1, max_value=5000),
)
def test_any_data_sequence_round_trips_through_any_split(
    payloads: list[bytes], split: int
) -> None:
    client, server = pair()
    sid, wire = client.open_stream({"streamtype": ["stdin"]})
    for i, payload in enumerate(payloads):
        wire += client.send_data(sid, payload, fin=i == len(payloads) - 1)
    events: list[Event] = []
    for i in range(0, len(wire), split):
        events += server.receive_data(wire[i : i + split])
    data = [e for e in events if isinstance(e, Data)]
    assert b"".join(e.data for e in data) == b"".join(payloads)
    assert [e.fin for e in data].count(True) == 1 and data[-1].fin

"""SPDY/3 header blocks: encoding, the shared zlib context, and the dictionary."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from vnode.spdy import Connection, ProtocolError, SynStream
from vnode.spdy.headers import (
    MAX_DECOMPRESSED_BLOCK,
    SPDY3_DICTIONARY,
    HeaderCompressor,
    HeaderDecompressor,
    decode_block,
    encode_block,
)

# Two SYN_STREAM frames written back to back by moby/spdystream's Framer (one zlib context),
# produced by `spdyclient -dump-syn-streams` (tests/interop/spdyclient). Headers:
# {"Streamtype": ["error"|"stdout"], "X-Many": ["a", "b"]}, stream ids 1 and 3.
GO_SYN_STREAMS = [
    (
        "80030001000000340000000100000000000078f9e3c6a7c202e50e703a2b294a4dcc851625aca9a080"
        "0625b10adddcc43c70da4f644802000000ffff"
    ),
    "800300010000001c00000003000000000000c2aa96adb824251f5268a32806000000ffff",
]


def test_dictionary_is_the_1423_byte_spdy3_dictionary() -> None:
    assert len(SPDY3_DICTIONARY) == 1423
    assert (
        hashlib.sha256(SPDY3_DICTIONARY).hexdigest()
        == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


def test_blocks_compressed_by_go_spdystream_decode_in_order() -> None:
    server = Connection()
    first = server.receive_data(bytes.fromhex(GO_SYN_STREAMS[0]))
    second = server.receive_data(bytes.fromhex(GO_SYN_STREAMS[1]))
    assert first == [SynStream(1, {"streamtype": ["error"], "x-many": ["a", "b"]})]
    assert second == [SynStream(3, {"streamtype": ["stdout"], "x-many": ["a", "b"]})]
    assert first[0].headers == {"streamtype": ["error"], "x-many": ["a", "b"]}


def test_second_go_block_cannot_be_decoded_without_the_first() -> None:
    with pytest.raises(ProtocolError, match="decompress"):
        Connection().receive_data(bytes.fromhex(GO_SYN_STREAMS[1]))


def test_round_trip_through_one_context_many_times() -> None:
    tx, rx = HeaderCompressor(), HeaderDecompressor()
    for i in range(50):
        headers = {"streamtype": ["stdout"], "n": [str(i)], "multi": ["x", "", "y"]}
        assert rx.decompress(tx.compress(headers)) == headers


def test_later_blocks_are_smaller_because_the_context_persists() -> None:
    tx = HeaderCompressor()
    headers = {"streamtype": ["stderr"], "x-kubernetes-thing": ["some-long-value-here"]}
    first, second = tx.compress(headers), tx.compress(headers)
    assert len(second) < len(first)


def test_names_are_lowercased_on_encode() -> None:
    assert decode_block(encode_block({"StreamType": ["error"]})) == {"streamtype": ["error"]}


def test_encode_rejects_names_duplicated_case_insensitively() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode_block({"A": ["1"], "a": ["2"]})


def test_empty_block_round_trips() -> None:
    assert decode_block(encode_block({})) == {}


def _block(*pairs: tuple[bytes, bytes], count: int | None = None) -> bytes:
    out = struct.pack(">I", len(pairs) if count is None else count)
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x00\x00", "shorter than its 4-byte count"),
        (_block((b"a", b"1"), count=2), "truncated"),
        (_block((b"a", b"1"))[:-1], "truncated"),
        (_block((b"", b"1")), "empty header name"),
        (_block((b"Upper", b"1")), "not lower-case"),
        (_block((b"a", b"1"), (b"a", b"2")), "twice"),
        (_block((b"a", b"1")) + b"\x00", "stray bytes"),
        (struct.pack(">I", 5000), "entries"),
    ],
)
def test_malformed_blocks_are_protocol_errors(block: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_block(block)


def test_garbage_compressed_block_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="decompress"):
        HeaderDecompressor().decompress(b"\xff" * 20)


def test_block_primed_with_another_dictionary_is_a_protocol_error() -> None:
    other = zlib.compressobj(zdict=b"not the spdy dictionary")
    bad = other.compress(encode_block({"a": ["b"]})) + other.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(ProtocolError, match="decompress"):
        HeaderDecompressor().decompress(bad)


def test_zlib_bomb_is_rejected_before_it_is_inflated() -> None:
    huge = encode_block({"a": ["x" * (MAX_DECOMPRESSED_BLOCK + 10)]})
    tx = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    compressed = tx.compress(huge) + tx.flush(zlib.Z_SYNC_FLUSH)
    assert len(compressed) < 10_000
    with pytest.raises(ProtocolError, match="more than"):
        HeaderDecompressor().decompress(compressed)


def test_finished_zlib_stream_is_rejected() -> None:
    tx = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    data = tx.compress(encode_block({"a": ["b"]})) + tx.flush(zlib.Z_FINISH)
    with pytest.raises(ProtocolError, match="ended"):
        HeaderDecompressor().decompress(data)

"""SPDY/3 header blocks: the name/value encoding and its zlib layer.

An uncompressed block is ``count(32) | (len(32) name len(32) value)*``. Names are lower-case
and unique within a block; several values for one name are joined with NUL bytes. Each
direction of a connection compresses its blocks with **one** zlib stream primed with the
SPDY/3 dictionary, flushed with Z_SYNC_FLUSH after every block, so a block can only be
decoded by the decompressor that has seen every earlier block in that direction.
"""

from __future__ import annotations

import struct
import zlib

from vnode.spdy.errors import ProtocolError

# Header values are arbitrary octets; latin-1 maps them 1:1 onto str and back.
_CHARSET = "latin-1"

# spdystream's default; an exec SYN_STREAM carries 1 or 2 headers.
MAX_HEADER_COUNT = 1000
# Bounds the output of one decompressed block, so a zlib bomb cannot exhaust memory.
MAX_DECOMPRESSED_BLOCK = 1 << 20


def _dictionary() -> bytes:
    """The zlib dictionary of the SPDY/3 draft (§2.6.10.1), 1423 bytes.

    It is a run of length-prefixed header words followed by a block of common value text.
    Checked against a block compressed by Go's spdystream in the unit tests.
    """
    words = ["options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get", "status"] + ["200 OK"] + ["version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    prefixed = b"".join(struct.pack(">I", len(w)) + w.encode("ascii") for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefixed + tail.encode("ascii")


SPDY3_DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


def encode_block(headers: Headers) -> bytes:
    """Serialise a header mapping (uncompressed). Names are lower-cased, values NUL-joined."""
    parts = [struct.pack(">I", len(headers))]
    seen: set[str] = set()
    for name, values in headers.items():
        lname = name.lower()
        if not lname:
            raise ValueError("empty header name")
        if lname in seen:
            raise ValueError(f"header {lname!r} given twice (case-insensitively)")
        seen.add(lname)
        raw_name = lname.encode(_CHARSET)
        raw_value = "\x00".join(values).encode(_CHARSET)
        parts += [struct.pack(">I", len(raw_name)), raw_name]
        parts += [struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(parts)


def decode_block(block: bytes) -> Headers:
    """Parse an uncompressed block; every byte must belong to it."""
    view = memoryview(block)
    if len(view) < 4:
        raise ProtocolError("header block shorter than its 4-byte count")
    (count,) = struct.unpack(">I", view[:4])
    if count > MAX_HEADER_COUNT:
        raise ProtocolError(f"header block has {count} entries (limit {MAX_HEADER_COUNT})")
    pos = 4
    headers: Headers = {}

    def take() -> bytes:
        nonlocal pos
        if pos + 4 > len(view):
            raise ProtocolError("header block truncated inside a length")
        (size,) = struct.unpack(">I", view[pos : pos + 4])
        pos += 4
        if pos + size > len(view):
            raise ProtocolError("header block truncated inside a name or value")
        chunk = bytes(view[pos : pos + size])
        pos += size
        return chunk

    for _ in range(count):
        raw_name = take()
        raw_value = take()
        if not raw_name:
            raise ProtocolError("empty header name")
        name = raw_name.decode(_CHARSET)
        if name != name.lower():
            raise ProtocolError(f"header name {name!r} is not lower-case")
        if name in headers:
            raise ProtocolError(f"header {name!r} appears twice in one block")
        headers[name] = raw_value.decode(_CHARSET).split("\x00")
    if pos != len(view):
        raise ProtocolError(f"{len(view) - pos} stray bytes after the header block")
    return headers


class HeaderCompressor:
    """The sending half: one zlib stream for every block this side sends."""

    def __init__(self) -> None:
        # Level 9 would cost CPU for ~30-byte blocks; the default is what Go's spdystream uses too.
        self._z = zlib.compressobj(zdict=SPDY3_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = encode_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving half: must see every compressed block of one direction, in order."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=SPDY3_DICTIONARY)

    def decompress(self, compressed: bytes) -> Headers:
        try:
            block = self._z.decompress(compressed, MAX_DECOMPRESSED_BLOCK + 1)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from exc
        if len(block) > MAX_DECOMPRESSED_BLOCK or self._z.unconsumed_tail:
            raise ProtocolError(
                f"header block decompresses to more than {MAX_DECOMPRESSED_BLOCK} bytes"
            )
        if self._z.eof:
            raise ProtocolError("peer ended its header zlib stream")
        return decode_block(block)

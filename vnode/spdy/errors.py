"""Errors raised by the sans-I/O SPDY/3.1 codec.

Two kinds, as in h11: a :class:`ProtocolError` means the *peer* broke the protocol (the
connection is then unusable and should be closed with GOAWAY); a :class:`LocalProtocolError`
means *our* caller asked for something the protocol forbids (a bug in the caller).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The remote peer sent bytes that violate SPDY/3.1. The session is over."""

    def __init__(self, message: str, *, stream_id: int = 0) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class LocalProtocolError(Exception):
    """Our own caller tried to do something the stream or session state forbids."""

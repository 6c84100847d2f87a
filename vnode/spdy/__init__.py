"""Sans-I/O SPDY/3.1, enough for Kubernetes exec/attach/port-forward (spdystream peers).

Imports no asyncio, socket or ssl: see :class:`vnode.spdy.connection.Connection`.
"""

from vnode.spdy.connection import Connection, Role, StreamState
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
from vnode.spdy.frames import GoAwayStatus, RstStatus

__all__ = [
    "Connection",
    "Data",
    "Event",
    "GoAway",
    "GoAwayStatus",
    "HeadersReceived",
    "LocalProtocolError",
    "Ping",
    "ProtocolError",
    "Role",
    "RstStatus",
    "RstStream",
    "Settings",
    "StreamState",
    "SynReply",
    "SynStream",
    "WindowUpdate",
]

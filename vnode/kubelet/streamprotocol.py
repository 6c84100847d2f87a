"""remotecommand sub-protocol versions and their negotiation (``X-Stream-Protocol-Version``).

Over SPDY, v5 behaves exactly like v4 (SPDY already half-closes streams), so both are served
by the same session code; see client-go ``tools/remotecommand/v5.go``.
"""

from __future__ import annotations

from collections.abc import Iterable

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"

# Everything a kubelet speaks for exec/attach over SPDY, newest first.
SPDY_PROTOCOLS = (V5, V4, V3, V2, V1)
# WebSocket (Kubernetes >= 1.36 direct mode): binary channel framing, v5 adds CLOSE.
WEBSOCKET_PROTOCOLS = (V5, V4)

_RANK = {V1: 1, V2: 2, V3: 3, V4: 4, V5: 5}


class NoCommonProtocol(Exception):
    def __init__(self, offered: list[str], supported: tuple[str, ...]) -> None:
        super().__init__(
            f"no supported stream protocol among {offered}; supported: {', '.join(supported)}"
        )
        self.offered = offered
        self.supported = supported


def offered_protocols(header_values: Iterable[str]) -> list[str]:
    """All offered versions, in client order, from repeated and/or comma-separated headers."""
    out = []
    for value in header_values:
        out += [p.strip() for p in value.split(",") if p.strip()]
    return out


def negotiate(header_values: Iterable[str], supported: tuple[str, ...] = SPDY_PROTOCOLS) -> str:
    """The first protocol the client offers that we support (the kubelet's Handshake rule).

    No header at all means the pre-versioning client: v1.
    """
    offered = offered_protocols(header_values)
    if not offered:
        return V1
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise NoCommonProtocol(offered, supported)


def version(protocol: str) -> int:
    """1..5, for feature checks (resize from v3, Status on the error stream from v4)."""
    return _RANK[protocol]

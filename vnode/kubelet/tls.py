"""TLS for the kubelet port: a server context that verifies client certificates when offered.

``CERT_OPTIONAL`` + the cluster CA is the kubelet's ``tls.RequestClientCert`` behaviour: a
certificate, if presented, must chain to the CA (or the handshake fails), but callers without
one still connect and authenticate with a bearer token.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the apiserver's client floor too
    ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE  # tokens only
    # HTTP/1.1 only: the SPDY and WebSocket upgrades are HTTP/1.1 mechanisms.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ServingTLS:
    """The current server context. Rotation swaps it; new connections use the new one,
    established connections keep theirs."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.client_ca_file = client_ca_file
        self._context = server_context(cert_file, key_file, client_ca_file)

    def context(self) -> ssl.SSLContext:
        return self._context

    def rotate(self, cert_file: Path, key_file: Path) -> None:
        """Load a renewed certificate; raises (keeping the old one) if the files are bad."""
        self._context = server_context(cert_file, key_file, self.client_ca_file)

"""Where a plugin (or an interLink API) listens, and how to reach it: URL, port and TLS settings.

interLink's rules, kept so that an interLink config works unchanged:

- ``unix:///path/to.sock``: HTTP over the unix socket; requests go to ``http://unix/<route>``;
- ``http://host`` or ``https://host`` with a separate port: the base URL is ``URL + ":" + port``;
- without a port, the URL is used as written (``http://host:4000`` works too).

TLS (https only): an extra CA bundle (PEM, or DER as interLink's ``HTTP.CaCert`` requires), an
optional client certificate and key for mTLS, and ``insecure`` to skip server verification.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Endpoint", "EndpointError", "TLSSettings"]

Scheme = Literal["unix", "http", "https"]

# The host part of request URLs on a unix socket; interLink uses the same placeholder.
UNIX_BASE_URL = "http://unix"


class EndpointError(ValueError):
    """The endpoint URL, port or TLS files are unusable; the message names which."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed plugin endpoint.

    ``base_url`` is what routes are appended to; ``socket_path`` is set for unix sockets.
    """

    scheme: Scheme
    base_url: str
    socket_path: str | None = None

    @classmethod
    def parse(cls, url: str, port: str | int | None = None) -> Endpoint:
        """Parse interLink's ``InterlinkURL`` (+ ``InterlinkPort``) or a plugin's ``SidecarURL`` (+ port)."""
        text = url.strip()
        port_text = "" if port is None else str(port).strip()
        if text.startswith("unix://"):
            path = text[len("unix://") :]
            if not path.startswith("/"):
                raise EndpointError(f"unix socket URL {url!r} must name an absolute path (unix:///...)")
            return cls(scheme="unix", base_url=UNIX_BASE_URL, socket_path=path)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(
                f"endpoint URL {url!r} must start with unix://, http:// or https:// and name a host"
            )
        netloc = parts.netloc
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise EndpointError(f"endpoint port {port_text!r} is not a TCP port number")
            if parts.port is not None:
                raise EndpointError(
                    f"endpoint URL {url!r} already has port {parts.port}; the separate port "
                    f"{port_text} would make it ambiguous"
                )
            netloc = f"{netloc}:{port_text}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(scheme="https" if parts.scheme == "https" else "http", base_url=base)

    def url(self, route: str) -> str:
        """The full URL of a route such as ``/create``."""
        return self.base_url + route

    def __str__(self) -> str:
        return f"unix://{self.socket_path}" if self.socket_path else self.base_url


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Client-side TLS for an https endpoint.

    ``ca_file``: extra trusted CA (PEM bundle or one DER certificate), added to the system roots.
    ``cert_file``/``key_file``: client certificate for mTLS. ``insecure``: do not verify the server.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """Build the context. Reads the files: call it once at start-up, not per request."""
        context = ssl.create_default_context()
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ca_file is not None:
            context.load_verify_locations(cadata=_read_ca(self.ca_file))
        if (self.cert_file is None) != (self.key_file is None):
            raise EndpointError("TLS client certificate and key must be given together")
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as error:
                raise EndpointError(
                    f"cannot load TLS client certificate {self.cert_file} / key {self.key_file}: {error}"
                ) from None
        return context


def _read_ca(path: Path) -> str | bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise EndpointError(f"cannot read CA certificate {path}: {error.strerror}") from None
    if b"-----BEGIN" in data:
        return data.decode("ascii", "replace")  # PEM bundle: ssl wants str for PEM cadata
    if not data:
        raise EndpointError(f"CA certificate {path} is empty")
    return data  # DER, as interLink's HTTP.CaCert (parsed with x509.ParseCertificate)

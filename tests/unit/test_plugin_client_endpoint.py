"""Endpoints parse the way interLink's config expects, and https works with PEM or DER CAs and mTLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint, EndpointError, TLSSettings
from plugin_client.errors import TransientPluginError
from plugin_client.server import start_server


@pytest.mark.parametrize(
    ("url", "port", "base"),
    [
        ("http://localhost", "4000", "http://localhost:4000"),
        ("https://edge.example.org", 30443, "https://edge.example.org:30443"),
        ("http://localhost:4000", None, "http://localhost:4000"),
        ("http://localhost:4000/", "", "http://localhost:4000"),
        ("https://proxy.example.org/interlink", "443", "https://proxy.example.org:443/interlink"),
        ("http://[::1]", "3000", "http://[::1]:3000"),
    ],
)
def test_http_base_url_is_url_colon_port(url: str, port: str | int | None, base: str) -> None:
    endpoint = Endpoint.parse(url, port)
    assert endpoint.base_url == base
    assert endpoint.url("/create") == base + "/create"
    assert endpoint.socket_path is None


def test_unix_socket_endpoint_ignores_the_port_and_uses_the_unix_placeholder_host() -> None:
    endpoint = Endpoint.parse("unix:///var/run/interlink.sock", "4000")
    assert endpoint.scheme == "unix"
    assert endpoint.socket_path == "/var/run/interlink.sock"
    assert endpoint.url("/status") == "http://unix/status"
    assert str(endpoint) == "unix:///var/run/interlink.sock"


@pytest.mark.parametrize(
    ("url", "port", "problem"),
    [
        ("localhost:4000", None, "must start with unix://"),
        ("ftp://host", None, "must start with unix://"),
        ("unix://relative.sock", None, "absolute path"),
        ("http://host", "http", "not a TCP port"),
        ("http://host", "70000", "not a TCP port"),
        ("http://host:4000", "4001", "ambiguous"),
    ],
)
def test_bad_endpoints_name_the_problem(url: str, port: str | None, problem: str) -> None:
    with pytest.raises(EndpointError, match=problem):
        Endpoint.parse(url, port)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def ping_app() -> web.Application:
    async def status(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        return web.json_response({"status": subject.get("commonName", "anonymous")})

    app = web.Application()
    app.router.add_route("*", "/status", status)
    return app


async def serve_tls(ca: trustme.CA, require_client_cert: bool) -> AsyncIterator[str]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    if require_client_cert:
        ca.configure_trust(server_context)
        server_context.verify_mode = ssl.CERT_REQUIRED
    server = await start_server(
        ping_app(), ["https://127.0.0.1:0"], ssl_context=server_context, shutdown_timeout=0.5
    )
    try:
        yield server.urls[0]
    finally:
        await server.close()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[str]:
    async for url in serve_tls(ca, require_client_cert=False):
        yield url


@pytest.fixture
async def mtls_url(ca: trustme.CA) -> AsyncIterator[str]:
    async for url in serve_tls(ca, require_client_cert=True):
        yield url


def https_client(url: str, tls: TLSSettings) -> PluginClient:
    host, _, port = url.rpartition(":")
    return PluginClient(ClientConfig(endpoint=Endpoint.parse(host, port), tls=tls))


async def test_https_with_a_pem_ca_bundle(ca: trustme.CA, tls_url: str, tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    async with https_client(tls_url, TLSSettings(ca_file=pem)) as client:
        response = await client.ping()
    assert response is not None and response.status == "anonymous"


async def test_https_with_a_der_ca_as_interlinks_http_cacert(
    ca: trustme.CA, tls_url: str, tmp_path: Path
) -> None:
    der = tmp_path / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    async with https_client(tls_url, TLSSettings(ca_file=der)) as client:
        assert await client.ping() is not None


async def test_https_without_the_ca_fails_as_transient(tls_url: str) -> None:
    async with https_client(tls_url, TLSSettings()) as client:
        with pytest.raises(TransientPluginError, match="certificate"):
            await client.ping()


async def test_insecure_skips_server_verification(tls_url: str) -> None:
    async with https_client(tls_url, TLSSettings(insecure=True)) as client:
        assert await client.ping() is not None


async def test_mtls_client_certificate_is_presented(
    ca: trustme.CA, mtls_url: str, tmp_path: Path
) -> None:
    pem, cert, key = tmp_path / "ca.pem", tmp_path / "vk.crt", tmp_path / "vk.key"
    ca.cert_pem.write_to_path(str(pem))
    issued = ca.issue_cert("vnode-agent", common_name="vnode-agent")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    async with https_client(mtls_url, TLSSettings(ca_file=pem, cert_file=cert, key_file=key)) as client:
        response = await client.ping()
    assert response is not None and response.status == "vnode-agent"
    async with https_client(mtls_url, TLSSettings(ca_file=pem)) as anonymous:
        with pytest.raises(TransientPluginError):
            await anonymous.ping()


def test_unreadable_tls_files_are_reported_by_name(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match="cannot read CA certificate"):
        TLSSettings(ca_file=tmp_path / "missing.pem").ssl_context()
    with pytest.raises(EndpointError, match="together"):
        TLSSettings(cert_file=tmp_path / "c.pem").ssl_context()
    (tmp_path / "c.pem").write_text("not a cert")
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(EndpointError, match="cannot load TLS client certificate"):
        TLSSettings(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem").ssl_context()

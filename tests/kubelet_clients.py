"""Clients of the kubelet front for tests: a trustme PKI, an h11 client over TLS, and a minimal
SPDY remotecommand client role built on vnode.spdy."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import h11
import trustme

from vnode import spdy
from vnode.kubelet.server import KubeletServer


class Env:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.tmp = tmp
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file, self.key_file = self.issue("127.0.0.1", name="server")
        client = self.ca.issue_cert(common_name="apiserver", organization_name="system:masters")
        self.client_ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self.client_ctx.check_hostname = False
        client.configure_cert(self.client_ctx)
        self.anon_ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self.anon_ctx.check_hostname = False

    def issue(self, *hosts: str, name: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert(*hosts)
        cert, key = self.tmp / f"{name}.pem", self.tmp / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    async def send(self, method: str, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.writer.write(self.h11.send(h11.Request(method=method, target=target,
                                                    headers=[("Host", "kubelet"), *(headers or [])])))
        self.writer.write(self.h11.send(h11.EndOfMessage()))
        await self.writer.drain()

    async def event(self) -> object:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
                continue
            return event

    async def response(self) -> tuple[h11.Response | h11.InformationalResponse, bytes]:
        head = await self.event()
        assert isinstance(head, (h11.Response, h11.InformationalResponse)), head
        if isinstance(head, h11.InformationalResponse):
            return head, b""
        body = b""
        while True:
            event = await self.event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return head, body

    async def get(self, target: str, **kw: object) -> tuple[int, bytes, dict[bytes, bytes]]:
        await self.send("GET", target, **kw)  # type: ignore[arg-type]
        head, body = await self.response()
        return head.status_code, body, dict(head.headers)


async def get(server: KubeletServer, env: Env, target: str, *, anon: bool = False) -> tuple[int, bytes, dict[bytes, bytes]]:
    client = await Client.open(server.port, env.anon_ctx if anon else env.client_ctx)
    try:
        return await client.get(target)
    finally:
        await client.close()


class SpdyPeer:
    """A minimal remotecommand client built on vnode.spdy (Role.CLIENT)."""

    def __init__(self, client: Client, initial: bytes) -> None:
        self.client = client
        self.conn = spdy.Connection(spdy.Role.CLIENT)
        self.pending = initial
        self.data: dict[int, bytes] = {}
        self.fins: set[int] = set()
        self.events: list[spdy.Event] = []

    def write(self, data: bytes) -> None:
        self.client.writer.write(data)

    async def pump_until(self, predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
        async def loop() -> None:
            while not predicate():
                data, self.pending = self.pending, b""
                if not data:
                    data = await self.client.reader.read(65536)
                    if not data:
                        return
                for event in self.conn.receive_data(data):
                    self.events.append(event)
                    if isinstance(event, spdy.Data):
                        self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                        if event.fin:
                            self.fins.add(event.stream_id)
        await asyncio.wait_for(loop(), timeout)


async def upgrade(server: KubeletServer, env: Env, target: str, protocols: str = "v4.channel.k8s.io") -> SpdyPeer:
    client = await Client.open(server.port, env.client_ctx)
    await client.send("POST", target, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                       ("X-Stream-Protocol-Version", protocols)])
    head, _ = await client.response()
    assert head.status_code == 101, head
    assert dict(head.headers)[b"x-stream-protocol-version"] == protocols.split(",")[0].encode()
    trailing, _ = client.h11.trailing_data
    return SpdyPeer(client, bytes(trailing))

"""The kubelet front over real TLS sockets, in-process: routing, errors, streaming, rotation,
and an exec session driven by vnode's own SPDY client role."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest

from tests.kubelet_clients import Client, Env, get, upgrade
from tests.kubelet_support import (
    InMemoryReviews,
    StaticLogs,
    StaticPods,
    SubprocessExec,
    make_pod,
)
from vnode import spdy
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.requests import LogOptions
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

NODE = "node-under-test"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def reviews() -> InMemoryReviews:
    return InMemoryReviews(grants={"apiserver": {("*", "*")}})


@pytest.fixture
def logs() -> StaticLogs:
    return StaticLogs(b"one\ntwo\nthree\n")


@pytest.fixture
async def server(env: Env, reviews: InMemoryReviews, logs: StaticLogs) -> AsyncIterator[KubeletServer]:
    srv = KubeletServer(
        KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0, stream_creation_timeout=0.5),
        tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
        authority=RequestAuthority(reviews, NODE),
        pods=StaticPods([make_pod("ns", "pod", containers=("main",))]),
        logs=logs,
        execs=SubprocessExec(),
    )
    async with srv:
        yield srv


async def test_healthz_and_pods(server: KubeletServer, env: Env) -> None:
    assert (await get(server, env, "/healthz"))[:2] == (200, b"ok")
    status, body, headers = await get(server, env, "/pods")
    assert status == 200 and headers[b"content-type"] == b"application/json"
    pods = json.loads(body)
    assert pods["kind"] == "PodList" and [p["metadata"]["name"] for p in pods["items"]] == ["pod"]


async def test_logs_are_streamed_chunked(server: KubeletServer, env: Env, logs: StaticLogs) -> None:
    status, body, headers = await get(server, env, "/containerLogs/ns/pod/main?tailLines=2&timestamps=true")
    assert (status, body) == (200, b"two\nthree\n")
    assert headers[b"transfer-encoding"] == b"chunked"
    assert logs.calls[-1][3] == LogOptions(timestamps=True, tail_lines=2)


async def test_limit_bytes_is_enforced_even_if_the_source_ignores_it(server: KubeletServer, env: Env) -> None:
    assert (await get(server, env, "/containerLogs/ns/pod/main?limitBytes=5"))[:2] == (200, b"one\nt")


@pytest.mark.parametrize(
    ("target", "code", "text"),
    [
        ("/containerLogs/ns/nope/main", 404, b"pod ns/nope not found"),
        ("/containerLogs/ns/pod/ghost", 404, b"container 'ghost' is not valid"),
        ("/containerLogs/ns/POD/main", 400, b"invalid pod name"),
        ("/containerLogs/ns/pod/main?tailLines=x", 400, b"tailLines"),
        ("/containerLogs/ns/pod/main?tailLines=-3", 422, b"tailLines"),
        ("/exec/ns/pod/main?command=ls&output=1", 400, b"upgrade"),
        ("/stats/summary", 404, b"not found"),
        ("/no/such/thing", 404, b"not found"),
    ],
)
async def test_bad_requests_get_clear_errors(server: KubeletServer, env: Env, target: str, code: int, text: bytes) -> None:
    status, body, _ = await get(server, env, target)
    assert status == code
    assert text in body


async def test_anonymous_gets_401_and_an_unauthorized_user_403(server: KubeletServer, env: Env, reviews: InMemoryReviews) -> None:
    assert (await get(server, env, "/pods", anon=True))[0] == 401
    reviews.grants["apiserver"] = {("get", "logs-only-not-proxy")}
    status, body, _ = await get(server, env, "/containerLogs/ns/pod/main")
    assert status == 403
    assert b"user=apiserver, verb=get, resource=nodes, subresource=proxy" in body


async def test_keep_alive_serves_several_requests_on_one_connection(server: KubeletServer, env: Env) -> None:
    client = await Client.open(server.port, env.client_ctx)
    try:
        for _ in range(3):
            assert (await client.get("/healthz"))[0] == 200
            client.h11.start_next_cycle()
        assert (await client.get("/containerLogs/ns/pod/main"))[1] == b"one\ntwo\nthree\n"
    finally:
        await client.close()


async def test_following_client_that_hangs_up_stops_the_log_source(server: KubeletServer, env: Env, monkeypatch) -> None:
    closed = asyncio.Event()

    async def ticks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.02)
        finally:
            closed.set()

    async def endless(namespace: str, pod: str, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        return ticks()

    monkeypatch.setattr(server._logs, "logs", endless)
    client = await Client.open(server.port, env.client_ctx)
    await client.send("GET", "/containerLogs/ns/pod/main?follow=true")
    head = await client.event()
    assert isinstance(head, h11.Response) and head.status_code == 200
    data = await client.event()
    assert isinstance(data, h11.Data) and data.data.startswith(b"tick")
    await client.close()
    await asyncio.wait_for(closed.wait(), 10)


async def test_rotated_certificate_is_used_for_new_connections(server: KubeletServer, env: Env) -> None:
    async def served_cert() -> bytes:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=env.client_ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    before = await served_cert()
    cert, key = env.issue("127.0.0.1", name="renewed")
    server._tls.rotate(cert, key)
    after = await served_cert()
    assert before != after
    assert ssl.DER_cert_to_PEM_cert(after).strip() == cert.read_text().strip()


# ---- SPDY exec against our own client role ---------------------------------------------------


async def test_spdy_exec_session_end_to_end_with_ping(server: KubeletServer, env: Env) -> None:
    peer = await upgrade(server, env, "/exec/ns/pod/main?command=sh&command=-c&command=cat%3B%20exit%207&input=1&output=1&error=1")
    ids = {}
    for kind in ("error", "stdin", "stdout", "stderr"):
        sid, raw = peer.conn.open_stream({"streamtype": [kind]})
        ids[kind] = sid
        peer.write(raw)
    peer.write(peer.conn.ping(1))
    await peer.pump_until(lambda: sum(isinstance(e, spdy.SynReply) for e in peer.events) == 4)
    peer.write(peer.conn.send_data(ids["stdin"], b"echoed back", fin=True))
    await peer.pump_until(lambda: ids["error"] in peer.fins and ids["stdout"] in peer.fins and
                          any(isinstance(e, spdy.GoAway) for e in peer.events))
    assert spdy.Ping(1, from_peer=False) in peer.events
    assert peer.data[ids["stdout"]] == b"echoed back"
    final = json.loads(peer.data[ids["error"]])
    assert final["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert ids["stderr"] in peer.fins
    await peer.client.close()


async def test_client_that_never_opens_its_streams_is_dropped(server: KubeletServer, env: Env) -> None:
    peer = await upgrade(server, env, "/exec/ns/pod/main?command=true&output=1")
    _, raw = peer.conn.open_stream({"streamtype": ["error"]})  # but never "stdout"
    peer.write(raw)
    await peer.pump_until(lambda: any(isinstance(e, spdy.GoAway) for e in peer.events))
    assert server._execs.specs == []  # type: ignore[attr-defined]
    await peer.client.close()


async def test_protocol_refusal_is_a_status_object(server: KubeletServer, env: Env) -> None:
    client = await Client.open(server.port, env.client_ctx)
    await client.send("POST", "/exec/ns/pod/main?command=ls&output=1",
                      [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
    head, body = await client.response()
    await client.close()
    assert head.status_code == 403
    assert b"v4.channel.k8s.io" in dict(head.headers)[b"x-accepted-stream-protocol-versions"]
    status = json.loads(body)
    assert status["kind"] == "Status" and "v5.channel.k8s.io" in status["message"]


async def test_client_vanishing_mid_exec_kills_the_command(server: KubeletServer, env: Env) -> None:
    peer = await upgrade(server, env, "/exec/ns/pod/main?command=sleep&command=600&output=1")
    for kind in ("error", "stdout"):
        _, raw = peer.conn.open_stream({"streamtype": [kind]})
        peer.write(raw)
    await peer.pump_until(lambda: sum(isinstance(e, spdy.SynReply) for e in peer.events) == 2)
    backend: SubprocessExec = server._execs  # type: ignore[assignment]
    for _ in range(200):
        if backend.sessions:
            break
        await asyncio.sleep(0.01)
    process = backend.sessions[0].proc
    assert process.returncode is None
    await peer.client.close()
    await asyncio.wait_for(process.wait(), 10)


async def test_garbage_after_the_upgrade_ends_the_session_with_a_protocol_error(server: KubeletServer, env: Env) -> None:
    peer = await upgrade(server, env, "/exec/ns/pod/main?command=true&output=1")
    peer.write(b"\x80\x02\x00\x01" + b"\x00" * 20)  # a SPDY/2 frame
    await peer.pump_until(lambda: any(isinstance(e, spdy.GoAway) for e in peer.events))
    goaway = next(e for e in peer.events if isinstance(e, spdy.GoAway))
    assert goaway.status == spdy.GoAwayStatus.PROTOCOL_ERROR
    await peer.client.close()

"""vnode's exec extension end to end: PluginClient.exec -> WebSocket -> server helper -> backend."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from plugin_client import channel
from plugin_client.client import ClientConfig, ExecSession, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import ExecNotSupported, PermanentPluginError
from plugin_client.models import ExecRequest, RetrievedPodData
from plugin_client.server import ServerExecSession, make_app, start_server
from tests.fakeplugin import FakeBackend, FakePlugin

UID = "0b5e2f6a-9d1c-4c7e-8a3b-2f1e0d9c8b7a"
POD = {"metadata": {"name": "job", "namespace": "team", "uid": UID}, "spec": {"containers": [{"name": "main"}]}}


def request(*command: str, stdin: bool = False, tty: bool = False, uid: str = UID) -> ExecRequest:
    return ExecRequest("team", uid, "job", "main", command, stdin=stdin, stderr=not tty, tty=tty)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="px-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture(params=["unix", "tcp"])
async def client(
    request: pytest.FixtureRequest, backend: FakeBackend, short_tmp: Path
) -> AsyncIterator[PluginClient]:
    listen = f"unix://{short_tmp}/plugin.sock" if request.param == "unix" else "http://127.0.0.1:0"
    async with FakePlugin(backend, listen) as plugin:
        config = ClientConfig(endpoint=Endpoint.parse(plugin.url))
        async with PluginClient(config) as plugin_client:
            await plugin_client.create(RetrievedPodData(pod=POD))
            yield plugin_client


async def collect(session: ExecSession) -> dict[str, bytes]:
    output = {"stdout": b"", "stderr": b""}
    async for stream, data in session:
        output[stream] += data
    return output


async def test_stdin_is_echoed_back_and_eof_ends_the_command(client: PluginClient) -> None:
    session = await client.exec(request("cat", stdin=True))
    await session.send_stdin(b"hello ")
    await session.send_stdin(b"world\n")
    await session.close_stdin()
    output = await collect(session)
    result = await session.wait()
    assert output == {"stdout": b"hello world\n", "stderr": b""}
    assert result.exit_code == 0 and result.success


async def test_non_zero_exit_code_comes_back(client: PluginClient) -> None:
    async with await client.exec(request("exit", "3")) as session:
        assert await collect(session) == {"stdout": b"", "stderr": b""}
        result = await session.wait()
    assert result.exit_code == 3
    assert result.message == "command terminated with non-zero exit code: exit status 3"


async def test_stdout_and_stderr_stay_apart(client: PluginClient) -> None:
    out = await client.exec(request("echo", "to", "out"))
    err = await client.exec(request("stderr", "to", "err"))
    assert await collect(out) == {"stdout": b"to out\n", "stderr": b""}
    assert await collect(err) == {"stdout": b"", "stderr": b"to err\n"}
    assert (await out.wait()).exit_code == (await err.wait()).exit_code == 0


async def test_with_a_tty_stderr_arrives_on_stdout(client: PluginClient) -> None:
    session = await client.exec(request("stderr", "merged", tty=True))
    assert await collect(session) == {"stdout": b"merged\n", "stderr": b""}


async def test_resizes_reach_the_command(client: PluginClient) -> None:
    session = await client.exec(request("watch-resize", stdin=True, tty=True))
    await session.resize(80, 24)
    chunks = session.__aiter__()
    assert await anext(chunks) == ("stdout", b"80x24\n")
    await session.resize(132, 50)
    assert await anext(chunks) == ("stdout", b"132x50\n")
    await session.close_stdin()
    assert [item async for item in chunks] == []
    assert (await session.wait()).exit_code == 0


async def test_wait_alone_reads_past_unread_output(client: PluginClient) -> None:
    session = await client.exec(request("echo", "nobody reads this"))
    assert (await session.wait()).exit_code == 0


async def test_large_output_arrives_intact_in_many_messages(
    client: PluginClient, backend: FakeBackend
) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, more than one WebSocket message may carry

    async def flood(req: ExecRequest, session: ServerExecSession) -> int:
        await session.write_stdout(payload)
        return 0

    backend.exec = flood  # type: ignore[method-assign]
    session = await client.exec(request("flood"))
    assert (await collect(session))["stdout"] == payload


async def test_unknown_command_exits_127_with_a_message(client: PluginClient) -> None:
    session = await client.exec(request("frobnicate"))
    output = await collect(session)
    assert output["stderr"] == b"frobnicate: command not found\n"
    assert (await session.wait()).exit_code == 127


async def test_exec_in_an_unknown_pod_fails_without_an_exit_code(client: PluginClient) -> None:
    session = await client.exec(request("echo", "x", uid="no-such-uid"))
    result = await session.wait()
    assert result.exit_code is None
    assert "not known to this plugin" in result.message


async def test_closing_the_session_stops_the_command(
    client: PluginClient, backend: FakeBackend
) -> None:
    session = await client.exec(request("sleep", "3600"))
    await backend.wait_for_calls("exec")
    await session.close()
    async with asyncio.timeout(10):
        while not backend.exec_cancelled:
            await asyncio.sleep(0.01)
    assert backend.exec_cancelled[0].command == ("sleep", "3600")


async def test_stdin_cannot_be_sent_after_closing_it(client: PluginClient) -> None:
    session = await client.exec(request("cat", stdin=True))
    await session.close_stdin()
    await session.close_stdin()  # idempotent
    with pytest.raises(PermanentPluginError, match="stdin already closed"):
        await session.send_stdin(b"late")
    assert (await session.wait()).exit_code == 0


# --- plugins without exec ----------------------------------------------------------------------


class NoExecBackend(FakeBackend):
    exec = None  # type: ignore[assignment]  # not an ExecBackend: no /exec route


async def test_plugin_without_exec_is_reported_as_not_supported(short_tmp: Path) -> None:
    server = await start_server(make_app(NoExecBackend()), [f"unix://{short_tmp}/p.sock"])
    try:
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(server.urls[0]))) as client:
            with pytest.raises(ExecNotSupported, match="exec not supported by this plugin") as caught:
                await client.exec(request("echo"))
    finally:
        await server.close()
    assert caught.value.status == 404


@pytest.mark.parametrize("status", [200, 404, 405, 501])
async def test_a_refused_upgrade_means_not_supported(status: int) -> None:
    async def plain(req: web.Request) -> web.Response:
        return web.Response(status=status, text="no websockets here")

    app = web.Application()
    app.router.add_route("*", "/exec", plain)
    server = await start_server(app, ["http://127.0.0.1:0"])
    try:
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(server.urls[0]))) as client:
            with pytest.raises(ExecNotSupported):
                await client.exec(request("echo"))
    finally:
        await server.close()


async def test_a_websocket_without_the_channel_subprotocol_means_not_supported() -> None:
    async def bare(req: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # accepts, but negotiates no subprotocol
        await ws.prepare(req)
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/exec", bare)
    server = await start_server(app, ["http://127.0.0.1:0"])
    try:
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(server.urls[0]))) as client:
            with pytest.raises(ExecNotSupported, match="did not accept v5.channel.k8s.io"):
                await client.exec(request("echo"))
    finally:
        await server.close()


async def test_interlink_dialect_against_an_interlink_api_without_exec_is_not_supported(
    short_tmp: Path,
) -> None:
    app = web.Application()  # interLink's API routes, none of them /exec
    for route in ("/create", "/delete", "/status", "/getLogs", "/pinglink"):
        app.router.add_route("*", route, lambda r: web.Response(text="[]"))
    server = await start_server(app, [f"unix://{short_tmp}/il.sock"])
    try:
        config = ClientConfig(endpoint=Endpoint.parse(server.urls[0]), dialect="interlink")
        async with PluginClient(config) as client:
            with pytest.raises(ExecNotSupported):
                await client.exec(request("echo"))
    finally:
        await server.close()


# --- the server side with other clients ---------------------------------------------------------


async def raw_exec(url: str, query: list[tuple[str, str]], protocol: str) -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(url + "/exec", params=query, protocols=(protocol,))
    except BaseException:
        await session.close()
        raise
    ws._vnode_session = session  # type: ignore[attr-defined]  # closed by the caller
    return ws


async def test_a_v4_client_works_and_gets_the_kubelet_announcement(backend: FakeBackend) -> None:
    async with FakePlugin(backend, "http://127.0.0.1:0") as plugin:
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(plugin.url))) as client:
            await client.create(RetrievedPodData(pod=POD))
        ws = await raw_exec(plugin.url, request("echo", "v4").to_query(), channel.V4_PROTOCOL)
        try:
            assert ws.protocol == channel.V4_PROTOCOL
            messages = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]
        finally:
            await ws._vnode_session.close()  # type: ignore[attr-defined]
    assert messages[0] == bytes([channel.STDOUT])  # empty message on the lowest output channel
    assert messages[1] == bytes([channel.STDOUT]) + b"v4\n"
    assert messages[2] == bytes([channel.ERROR]) + channel.encode_status(channel.status_success())


async def test_a_bad_exec_query_is_refused_before_the_upgrade(backend: FakeBackend) -> None:
    async with FakePlugin(backend, "http://127.0.0.1:0") as plugin:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await raw_exec(plugin.url, [("namespace", "team")], channel.V5_PROTOCOL)
    assert caught.value.status == 400


async def test_an_exec_request_the_plugin_refuses_is_permanent(client: PluginClient) -> None:
    incomplete = ExecRequest("team", UID, "job", "", ("echo",))  # no container name
    with pytest.raises(PermanentPluginError, match="HTTP 400") as caught:
        await client.exec(incomplete)
    assert not isinstance(caught.value, ExecNotSupported)


async def test_large_stdin_is_split_into_acceptable_messages(client: PluginClient) -> None:
    payload = bytes(range(256)) * 20000  # 5 MiB in one call, above the 4 MiB message limit
    session = await client.exec(request("cat", stdin=True))
    reader = asyncio.ensure_future(collect(session))
    await session.send_stdin(payload)
    await session.close_stdin()
    assert (await reader)["stdout"] == payload
    assert (await session.wait()).exit_code == 0


async def test_the_plugins_status_document_is_kept_for_passing_on(client: PluginClient) -> None:
    session = await client.exec(request("exit", "7"))
    result = await session.wait()
    assert result.status == channel.status_exit_code(7)


async def test_wait_finishes_after_an_iteration_was_abandoned(client: PluginClient) -> None:
    session = await client.exec(request("cat", stdin=True))
    await session.send_stdin(b"one\n")
    async for stream, data in session:
        assert (stream, data) == ("stdout", b"one\n")
        break  # stop reading half-way, as a consumer that lost interest would
    await session.close_stdin()
    assert (await asyncio.wait_for(session.wait(), timeout=10)).exit_code == 0


async def test_wait_while_another_task_iterates_leaves_the_output_to_it(client: PluginClient) -> None:
    session = await client.exec(request("cat", stdin=True))
    reader = asyncio.ensure_future(collect(session))
    await asyncio.sleep(0)  # the reader starts iterating first
    waiter = asyncio.ensure_future(session.wait())
    await session.send_stdin(b"all of it\n")
    await session.close_stdin()
    result, output = await asyncio.wait_for(asyncio.gather(waiter, reader), timeout=10)
    assert result.exit_code == 0 and output["stdout"] == b"all of it\n"

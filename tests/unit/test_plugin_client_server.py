"""The plugin server helper: decoding requests as interLink sends them, answering with the right
status codes, listening on unix sockets and TCP, and the in-memory fake plugin built on it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plugin_client.client import ClientConfig, PluginClient, Timeouts
from plugin_client.endpoint import Endpoint
from plugin_client.errors import (
    PermanentPluginError,
    PodNotFound,
    TransientPluginError,
)
from plugin_client.models import (
    CreateStruct,
    LogOpts,
    LogStruct,
    PingResources,
    PingResponse,
    PodStatus,
    RetrievedPodData,
    decode_list,
    encode,
)
from plugin_client.server import make_app, start_server
from tests.fakeplugin import FakeBackend, FakePlugin

UID = "8d6f3c2a-1b4e-4f5a-9c7d-0e1f2a3b4c5d"
POD = {
    "metadata": {"name": "job", "namespace": "team", "uid": UID},
    "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "main"}, {"name": "side"}]},
}
DATA = RetrievedPodData(pod=POD)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ps-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def plugin(backend: FakeBackend, short_tmp: Path) -> AsyncIterator[FakePlugin]:
    async with FakePlugin(backend, f"unix://{short_tmp}/plugin.sock", "http://127.0.0.1:0") as fake:
        yield fake


def client_for(url: str, **kwargs: Any) -> PluginClient:
    return PluginClient(ClientConfig(endpoint=Endpoint.parse(url), **kwargs))


async def raw(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """A request the typed client would never send, on the TCP address."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, data=body) as response,
    ):
        return response.status, await response.read()


def tcp(plugin: FakePlugin) -> str:
    return next(url for url in plugin.urls if url.startswith("http://"))


# --- decoding requests -----------------------------------------------------------------------


async def test_create_answers_create_struct_on_both_listeners(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    for url in plugin.urls:
        async with client_for(url) as client:
            result = await client.create(DATA)
        assert result.pod_uid == UID and result.pod_jid
    assert backend.create_count(UID) == 2


async def test_create_accepts_the_old_one_element_list_and_answers_in_kind(plugin: FakePlugin) -> None:
    status, body = await raw(tcp(plugin), "POST", "/create", b"[" + encode(DATA) + b"]")
    assert status == 200
    (created,) = decode_list(body, CreateStruct)
    assert created.pod_uid == UID


async def test_create_refuses_a_list_of_several_pods(plugin: FakePlugin) -> None:
    status, body = await raw(tcp(plugin), "POST", "/create", b"[" + encode(DATA) + b"," + encode(DATA) + b"]")
    assert status == 400
    assert body == b"body: expected one RetrievedPodData, got a list of 2\n"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_routes_accept_any_method_like_gos_servemux(plugin: FakePlugin, method: str) -> None:
    status, _ = await raw(tcp(plugin), method, "/create", encode(DATA))
    assert status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{bad", b"body: invalid JSON"),
        (b'{"pod":{},"container":{"name":"x"}}', b"container: expected list, got object\n"),
        (b'{"pod":[]}', b"pod: expected object, got list\n"),
    ],
)
async def test_malformed_create_is_a_400_naming_the_field(
    plugin: FakePlugin, body: bytes, message: bytes
) -> None:
    status, answer = await raw(tcp(plugin), "POST", "/create", body)
    assert status == 400 and answer.startswith(message)


@pytest.mark.parametrize("body", [b"[]", b"null", b"", b"  \n"])
async def test_empty_status_request_is_a_ping(plugin: FakePlugin, backend: FakeBackend, body: bytes) -> None:
    backend.ping_response = PingResponse(resources=PingResources(cpu="8", pods="100"))
    status, answer = await raw(tcp(plugin), "GET", "/status", body)
    assert (status, answer) == (200, b'{"status":"ok","resources":{"cpu":"8","pods":"100"}}')
    assert [call.op for call in backend.calls] == ["ping"]


async def test_ping_without_a_response_answers_the_legacy_empty_list(plugin: FakePlugin) -> None:
    assert await raw(tcp(plugin), "GET", "/status", b"[]") == (200, b"[]")
    async with client_for(plugin.url) as client:
        assert await client.ping() is None


async def test_status_rejects_non_object_pods_by_index(plugin: FakePlugin) -> None:
    status, answer = await raw(tcp(plugin), "GET", "/status", b'[{"metadata":{}}, 3]')
    assert (status, answer) == (400, b"[1]: expected a v1.Pod object\n")


async def test_status_reports_known_pods_with_init_containers(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    async with client_for(plugin.url) as client:
        await client.create(DATA)
        backend.finish(UID, exit_codes={"main": 3})
        other = {"metadata": {"name": "x", "namespace": "team", "uid": "other"}}
        (status,) = await client.status([POD, other])
    assert isinstance(status, PodStatus) and status.uid == UID and status.name == "job"
    assert status.containers is not None and status.init_containers is not None
    codes = {c.name: c.state.terminated.exit_code for c in status.containers if c.state.terminated}
    assert codes == {"main": 3, "side": 0}
    assert status.init_containers[0].state.terminated is not None


# --- answers ---------------------------------------------------------------------------------


async def test_deleting_an_unknown_pod_is_a_404_the_client_reads_as_pod_not_found(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    async with client_for(plugin.url) as client:
        with pytest.raises(PodNotFound, match="HTTP 404: pod team/job .* not known"):
            await client.delete(POD)
        await client.create(DATA)
        await client.delete(POD)
    assert backend.deleted == [UID]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (PermanentPluginError("invalid partition 'gpu'", status=422), 422, PermanentPluginError),
        (PermanentPluginError("bad flags"), 400, PermanentPluginError),
        (TransientPluginError("slurmctld not responding"), 503, TransientPluginError),
        (TransientPluginError("sbatch timed out", status=504), 504, TransientPluginError),
    ],
)
async def test_backend_errors_become_one_line_http_answers(
    plugin: FakePlugin, backend: FakeBackend, error: Exception, status: int, kind: type[Exception]
) -> None:
    backend.fail("create", error)  # type: ignore[arg-type]
    assert (await raw(tcp(plugin), "POST", "/create", encode(DATA)))[0] == status
    async with client_for(plugin.url) as client:
        with pytest.raises(kind) as caught:
            await client.create(DATA)
    assert caught.value.status == status  # type: ignore[attr-defined]
    assert str(error).split(": ", 1)[-1] in str(caught.value)


async def test_unexpected_backend_exceptions_are_500_and_the_server_keeps_serving(
    plugin: FakePlugin, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(pods: list[dict[str, Any]]) -> list[PodStatus]:
        raise KeyError("spec")

    backend.status = broken  # type: ignore[method-assign]
    status, body = await raw(tcp(plugin), "GET", "/status", encode([POD]))
    assert (status, body) == (500, b"internal error: KeyError: 'spec'\n")
    assert "Traceback" in caplog.text
    assert (await raw(tcp(plugin), "GET", "/status", b"[]"))[0] == 200


async def test_failures_can_be_limited_to_a_number_of_calls(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    backend.fail("create", TransientPluginError("busy"), times=2)
    async with client_for(plugin.url) as client:
        for _ in range(2):
            with pytest.raises(TransientPluginError):
                await client.create(DATA)
        await client.create(DATA)
    assert backend.create_count(UID) == 3


async def test_a_create_finishes_even_when_the_caller_gives_up(
    plugin: FakePlugin, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plugin_client.server")
    backend.delays["create"] = 0.5
    async with client_for(plugin.url, timeouts=Timeouts(create=0.05)) as client:
        with pytest.raises(TransientPluginError, match="no answer"):
            await client.create(DATA)
    await asyncio.wait_for(_until(lambda: UID in backend.pods), timeout=10)
    await asyncio.wait_for(_until(lambda: "finished after its caller left" in caplog.text), 10)


async def test_a_failure_nobody_waits_for_any_more_is_still_logged(
    plugin: FakePlugin, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.delays["delete"] = 0.3
    backend.fail("delete", TransientPluginError("scancel: slurmctld down"))
    async with client_for(plugin.url, timeouts=Timeouts(delete=0.05)) as client:
        with pytest.raises(TransientPluginError):
            await client.delete(POD)
    message = "POST /delete failed after its caller left: scancel: slurmctld down"
    await asyncio.wait_for(_until(lambda: message in caplog.text), timeout=10)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- logs ------------------------------------------------------------------------------------


async def test_logs_of_an_unknown_pod_are_a_404_before_any_byte(plugin: FakePlugin) -> None:
    async with client_for(plugin.url) as client:
        with pytest.raises(PermanentPluginError) as caught:
            await client.logs(LogStruct("team", UID, "job", "main"))
    assert caught.value.status == 404


async def test_logs_with_tail_and_follow_until_the_container_ends(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    async with client_for(plugin.url) as client:
        await client.create(DATA)
        backend.append_log(UID, "main", b"one\ntwo\nthree\n")
        stream = await client.logs(LogStruct("team", UID, "job", "main", LogOpts(tail=2, follow=True)))
        chunks = stream.__aiter__()
        assert await anext(chunks) == b"two\nthree\n"
        backend.append_log(UID, "main", b"four\n")
        assert await anext(chunks) == b"four\n"
        backend.finish(UID)
        assert [chunk async for chunk in chunks] == []


async def test_a_followed_log_stops_on_the_plugin_when_the_client_leaves(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    closed = asyncio.Event()

    async def endless(request: LogStruct) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(3600)
        finally:
            closed.set()

    backend.logs = endless  # type: ignore[assignment,method-assign]
    async with client_for(plugin.url) as client:
        stream = await client.logs(LogStruct("team", UID, "job", "main", LogOpts(follow=True)))
        assert await anext(stream.__aiter__()) == b"tick\n"
        await stream.aclose()
    await asyncio.wait_for(closed.wait(), timeout=10)


# --- listening -------------------------------------------------------------------------------


async def test_unix_socket_has_mode_0660_and_is_removed_on_close(short_tmp: Path) -> None:
    path = short_tmp / "p.sock"
    server = await start_server(make_app(FakeBackend()), [f"unix://{path}"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    await server.close()
    assert not path.exists()


async def test_a_stale_socket_file_is_replaced(short_tmp: Path) -> None:
    path = short_tmp / "p.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # left behind by a process that died
    server = await start_server(make_app(FakeBackend()), [f"unix://{path}"])
    try:
        async with client_for(f"unix://{path}") as client:
            assert await client.ping() is None
    finally:
        await server.close()


async def test_a_live_socket_is_not_stolen(plugin: FakePlugin) -> None:
    with pytest.raises(OSError, match="another server is listening"):
        await start_server(make_app(FakeBackend()), [plugin.url])


async def test_a_regular_file_in_the_way_is_not_deleted(short_tmp: Path) -> None:
    path = short_tmp / "p.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        await start_server(make_app(FakeBackend()), [f"unix://{path}"])
    assert path.read_text() == "precious"


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:1", "http://nohost", "https://127.0.0.1:0"])
async def test_bad_listen_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        await start_server(make_app(FakeBackend()), [address])


async def test_a_stopped_plugin_is_unreachable_and_comes_back_on_the_same_addresses(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    urls = list(plugin.urls)
    await plugin.stop()
    for url in urls:
        async with client_for(url) as client:
            with pytest.raises(TransientPluginError):
                await client.ping()
    await plugin.start()
    assert plugin.urls == urls
    for url in urls:
        async with client_for(url) as client:
            await client.ping()


async def test_system_info_is_served_only_by_backends_that_have_it(short_tmp: Path) -> None:
    class WithInfo(FakeBackend):
        async def system_info(self) -> dict[str, Any]:
            return {"status": "ok", "slurm_connected": True}

    for backend, expected in ((WithInfo(), 200), (FakeBackend(), 404)):
        server = await start_server(make_app(backend), ["http://127.0.0.1:0"])
        try:
            status, body = await raw(server.urls[0], "GET", "/system-info")
        finally:
            await server.close()
        assert status == expected
        if expected == 200:
            assert body == b'{"status":"ok","slurm_connected":true}'


async def test_fake_records_calls_for_exactly_once_assertions(
    plugin: FakePlugin, backend: FakeBackend
) -> None:
    async with client_for(plugin.url) as client:
        await client.create(DATA)
        await client.status([POD])
        await client.ping()
    assert [call.op for call in backend.calls] == ["create", "status", "ping"]
    assert backend.create_count(UID) == 1
    assert backend.calls_of("status", UID)[0].payload == [POD]
    assert await backend.wait_for_calls("ping") == backend.calls_of("ping")

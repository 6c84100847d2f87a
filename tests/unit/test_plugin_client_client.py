"""The plugin client against real local HTTP servers (unix socket and TCP): what goes on the wire,
and how every kind of failure is classified."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plugin_client.client import ClientConfig, PluginClient, Timeouts, routes_for
from plugin_client.endpoint import Endpoint
from plugin_client.errors import (
    PermanentPluginError,
    PodNotFound,
    TransientPluginError,
    WireFormatError,
    is_transient,
)
from plugin_client.models import (
    CreateStruct,
    LogOpts,
    LogStruct,
    PingResponse,
    PodCreateRequests,
    RetrievedContainer,
    RetrievedPodData,
    encode,
    parse_json,
)
from plugin_client.server import start_server

POD = {"metadata": {"name": "job", "namespace": "team", "uid": "8d6f3c2a-1b4e-4f5a-9c7d-0e1f2a3b4c5d"}}
CONFIG_MAP = {"metadata": {"name": "cfg"}, "data": {"a": "<b>"}}
POD_DATA = RetrievedPodData(
    pod=POD,
    containers=(
        RetrievedContainer(name="init", config_maps=(CONFIG_MAP,)),
        RetrievedContainer(name="main", config_maps=(CONFIG_MAP,)),
    ),
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A raw aiohttp app that records requests and answers with scripted handlers."""

    seen: list[Seen] = field(default_factory=list)
    answers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        answer = self.answers.get(request.path)
        if answer is None:
            return web.Response(status=404, text="404: Not Found")
        return await answer(request)


def reply(status: int = 200, body: bytes | str = b"", delay: float = 0.0) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        data = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=data)

    return answer


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="pc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["unix", "tcp"])
async def served(request: pytest.FixtureRequest, short_tmp: Path) -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    listen = f"unix://{short_tmp}/plugin.sock" if request.param == "unix" else "http://127.0.0.1:0"
    server = await start_server(recorder.app(), [listen], shutdown_timeout=0.5)
    try:
        yield recorder, server.urls[0]
    finally:
        await server.close()


def client_for(url: str, **kwargs: Any) -> PluginClient:
    return PluginClient(ClientConfig(endpoint=Endpoint.parse(url), **kwargs))


# --- what goes on the wire -------------------------------------------------------------------


async def test_create_posts_one_retrieved_pod_data_with_go_bytes(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/create"] = reply(200, b'{"PodUID":"u","PodJID":"42"}')
    async with client_for(url) as client:
        result = await client.create(POD_DATA)
    assert result == CreateStruct(pod_uid="u", pod_jid="42")
    (seen,) = recorder.seen
    assert (seen.method, seen.path) == ("POST", "/create")
    assert seen.body == encode(POD_DATA)
    assert seen.headers["Content-Type"] == "application/json"
    name, _, number = seen.headers["InterLink-Http-Session"].partition("#")
    assert name == "CreatePod" and number.isdigit()
    assert "Authorization" not in seen.headers


async def test_status_is_a_get_that_carries_the_pod_list_as_body(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/status"] = reply(
        200, b'[{"name":"job","UID":"u","containers":[{"name":"main","state":{"terminated":{"exitCode":3}}}]}]'
    )
    async with client_for(url) as client:
        (status,) = await client.status([POD, POD])
    assert status.containers is not None
    assert status.containers[0].state.terminated is not None
    assert status.containers[0].state.terminated.exit_code == 3
    (seen,) = recorder.seen
    assert (seen.method, seen.path) == ("GET", "/status")
    assert parse_json(seen.body) == [POD, POD]
    assert seen.headers["InterLink-Http-Session"].startswith("GetStatus#")


async def test_status_of_no_pods_sends_nothing_because_an_empty_list_is_a_ping(
    served: tuple[Recorder, str],
) -> None:
    recorder, url = served
    async with client_for(url) as client:
        assert await client.status([]) == []
    assert recorder.seen == []


async def test_delete_posts_the_pod(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/delete"] = reply(200, "All containers for submitted Pods have been deleted")
    async with client_for(url) as client:
        await client.delete(POD)
    (seen,) = recorder.seen
    assert (seen.method, seen.path, parse_json(seen.body)) == ("POST", "/delete", POD)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", None),
        (b"", None),
        (b"PARTITION AVAIL  TIMELIMIT\ndebug* up infinite", None),
        (b'{"status":"ok","resources":{"cpu":"4"}}', "4"),
        (b'{"status":"ok","resources":{"pods":5}}', None),
        (b"{not json", None),
    ],
)
async def test_ping_sends_an_empty_list_to_status_and_tolerates_any_healthy_body(
    served: tuple[Recorder, str], body: bytes, expected: str | None
) -> None:
    recorder, url = served
    recorder.answers["/status"] = reply(200, body)
    async with client_for(url) as client:
        response = await client.ping()
    if expected is None:
        assert response is None
    else:
        assert isinstance(response, PingResponse) and response.resources is not None
        assert response.resources.cpu == expected
    (seen,) = recorder.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/status", b"[]")
    assert seen.headers["InterLink-Http-Session"].startswith("Ping#")


async def test_interlink_dialect_speaks_like_interlinks_virtual_kubelet(
    served: tuple[Recorder, str],
) -> None:
    recorder, url = served
    recorder.answers["/create"] = reply(200, b'{"PodUID":"u","PodJID":"7"}')
    recorder.answers["/delete"] = reply(200)
    recorder.answers["/pinglink"] = reply(200, b"[]")
    async with client_for(url, dialect="interlink", job_script_url="http://b/build") as client:
        await client.create(POD_DATA)
        await client.delete(POD)
        assert await client.ping() is None
    create, delete, ping = recorder.seen
    assert (create.method, create.path) == ("POST", "/create")
    assert create.body == encode(PodCreateRequests.from_pod_data(POD_DATA, "http://b/build"))
    assert parse_json(create.body)["configmaps"] == [CONFIG_MAP]  # deduplicated across containers
    assert (delete.method, delete.path) == ("DELETE", "/delete")
    assert (ping.method, ping.path, ping.body) == ("POST", "/pinglink", b"")


def test_dialect_route_tables() -> None:
    plugin, interlink = routes_for("plugin"), routes_for("interlink")
    assert (plugin["ping"].method, plugin["ping"].path) == ("GET", "/status")
    assert (interlink["ping"].method, interlink["ping"].path) == ("POST", "/pinglink")
    assert interlink["delete"].method == "DELETE" and plugin["delete"].method == "POST"
    with pytest.raises(ValueError, match="unknown plugin dialect"):
        routes_for("grpc")  # type: ignore[arg-type]


async def test_token_file_is_read_again_on_every_call(
    served: tuple[Recorder, str], short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, url = served
    recorder.answers["/status"] = reply(200, b"[]")
    token = short_tmp / "token"
    caplog.set_level(logging.WARNING, logger="plugin_client.client")
    async with client_for(url, token_file=token) as client:
        await client.ping()  # missing file: no header, one warning
        await client.ping()
        token.write_text("first-token\n")
        await client.ping()
        token.write_text("second-token")
        await client.ping()
    headers = [seen.headers.get("Authorization") for seen in recorder.seen]
    assert headers == [None, None, "Bearer first-token", "Bearer second-token"]
    warnings = [r for r in caplog.records if "token file" in r.getMessage()]
    assert len(warnings) == 1


async def test_every_call_gets_its_own_session_id(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/status"] = reply(200, b"[]")
    async with client_for(url) as client:
        for _ in range(5):
            await client.ping()
    assert len({seen.headers["InterLink-Http-Session"] for seen in recorder.seen}) == 5


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (500, TransientPluginError, True),
        (502, TransientPluginError, True),
        (503, TransientPluginError, True),
        (429, TransientPluginError, True),
        (401, TransientPluginError, True),
        (400, PermanentPluginError, False),
        (403, PermanentPluginError, False),
        (422, PermanentPluginError, False),
        (404, PermanentPluginError, False),
        (301, PermanentPluginError, False),
    ],
)
async def test_http_errors_are_classified(
    served: tuple[Recorder, str], status: int, kind: type[Exception], transient: bool
) -> None:
    recorder, url = served
    recorder.answers["/create"] = reply(status, "sbatch: error: invalid partition\n  (details)\n")
    async with client_for(url) as client:
        with pytest.raises(kind) as caught:
            await client.create(POD_DATA)
    error = caught.value
    assert is_transient(error) is transient
    assert error.status == status  # type: ignore[attr-defined]
    assert error.message == f"HTTP {status}: sbatch: error: invalid partition (details)"  # type: ignore[attr-defined]
    assert str(error).startswith("plugin create: HTTP")
    assert error.session.startswith("CreatePod#")  # type: ignore[attr-defined]


async def test_404_on_delete_means_the_plugin_does_not_know_the_pod(
    served: tuple[Recorder, str],
) -> None:
    recorder, url = served
    recorder.answers["/delete"] = reply(404, "pod team/job not found")
    async with client_for(url) as client:
        with pytest.raises(PodNotFound) as caught:
            await client.delete(POD)
    assert not is_transient(caught.value)


async def test_junk_json_on_success_is_a_wire_format_error(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/create"] = reply(200, b"<html>ok</html>")
    recorder.answers["/status"] = reply(200, b'{"name":"not a list"}')
    async with client_for(url) as client:
        with pytest.raises(WireFormatError) as create_error:
            await client.create(POD_DATA)
        with pytest.raises(WireFormatError, match="expected a JSON list"):
            await client.status([POD])
    assert create_error.value.op == "create" and not is_transient(create_error.value)


async def test_slow_plugin_times_out_as_transient(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/create"] = reply(200, b"{}", delay=5)
    async with client_for(url, timeouts=Timeouts(create=0.2)) as client:
        with pytest.raises(TransientPluginError, match="no answer within 0.2s"):
            await client.create(POD_DATA)


async def test_refused_connection_on_tcp_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        async with client_for(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(TransientPluginError, match="127.0.0.1"):
                await client.ping()


async def test_missing_unix_socket_is_transient(short_tmp: Path) -> None:
    async with client_for(f"unix://{short_tmp}/absent.sock") as client:
        with pytest.raises(TransientPluginError) as caught:
            await client.status([POD])
    assert caught.value.op == "status"


async def test_dead_unix_socket_file_is_transient(short_tmp: Path) -> None:
    path = short_tmp / "dead.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # bound, never listening: connect is refused
        async with client_for(f"unix://{path}") as client:
            with pytest.raises(TransientPluginError):
                await client.delete(POD)


async def test_connection_reset_mid_answer_is_transient(served: tuple[Recorder, str]) -> None:
    recorder, url = served

    async def hang_up(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'[{"name":')
        assert request.transport is not None
        request.transport.close()
        return response

    recorder.answers["/status"] = hang_up
    async with client_for(url) as client:
        with pytest.raises(TransientPluginError):
            await client.status([POD])


# --- logs ------------------------------------------------------------------------------------


async def test_logs_stream_chunks_as_the_plugin_writes_them(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    release = asyncio.Event()

    async def follow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        await response.write(b"first line\n")
        await release.wait()  # only continues once the client has seen the first line
        await response.write(b"second line\n")
        await response.write_eof()
        return response

    recorder.answers["/getLogs"] = follow
    request = LogStruct("team", "u", "job", "main", LogOpts(follow=True, tail=10))
    async with client_for(url) as client:
        stream = await client.logs(request)
        chunks = stream.__aiter__()
        assert await anext(chunks) == b"first line\n"
        release.set()
        rest = [chunk async for chunk in chunks]
    assert b"".join(rest) == b"second line\n"
    (seen,) = recorder.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/getLogs", encode(request))
    assert seen.headers["InterLink-Http-Session"].startswith("GetLogs#")


async def test_log_errors_are_raised_before_any_byte(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/getLogs"] = reply(400, "Both Tail and LimitBytes set. Set only one of them")
    async with client_for(url) as client:
        with pytest.raises(PermanentPluginError, match="Both Tail and LimitBytes"):
            await client.logs(LogStruct("n", "u", "p", "c", LogOpts(tail=1, limit_bytes=1)))


async def test_closing_a_followed_log_stream_hangs_up_on_the_plugin(
    served: tuple[Recorder, str],
) -> None:
    recorder, url = served
    ended = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        try:
            while True:
                await response.write(b"tick\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            ended.set()
            raise

    recorder.answers["/getLogs"] = endless
    async with client_for(url) as client:
        async with await client.logs(LogStruct("n", "u", "p", "c", LogOpts(follow=True))) as stream:
            async for chunk in stream:
                assert chunk.startswith(b"tick")
                break
        await asyncio.wait_for(ended.wait(), timeout=10)


async def test_read_all_collects_a_finite_log(served: tuple[Recorder, str]) -> None:
    recorder, url = served
    recorder.answers["/getLogs"] = reply(200, b"a\nb\n")
    async with client_for(url) as client:
        assert await (await client.logs(LogStruct("n", "u", "p", "c"))).read_all() == b"a\nb\n"


async def test_a_malformed_ping_response_is_reported_once_not_every_ping(
    served: tuple[Recorder, str], caplog: pytest.LogCaptureFixture
) -> None:
    recorder, url = served
    recorder.answers["/status"] = reply(200, b'{"status":"ok","taints":{"key":"x"}}')
    caplog.set_level(logging.WARNING, logger="plugin_client.client")
    async with client_for(url) as client:
        for _ in range(3):
            assert await client.ping() is None
    warnings = [r.getMessage() for r in caplog.records if "ping answer ignored" in r.getMessage()]
    assert len(warnings) == 1 and "taints: expected list, got object" in warnings[0]

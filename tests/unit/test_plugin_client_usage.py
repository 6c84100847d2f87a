"""vnode's usage extension of the plugin API (plugin_client/USAGE.md): the wire models, the
server route for a UsageBackend, and the client's ``usage`` call, including plugins without it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import (
    PermanentPluginError,
    UsageNotSupported,
    WireFormatError,
)
from plugin_client.models import KubeObject, encode
from plugin_client.server import UsageBackend, make_app, start_server
from plugin_client.usage import ContainerUsage, PodUsage, format_time
from tests.fakeplugin import FakeBackend

UID = "8d6f3c2a-1b4e-4f5a-9c7d-0e1f2a3b4c5d"
POD = {"metadata": {"name": "burn", "namespace": "team", "uid": UID},
       "spec": {"containers": [{"name": "main"}, {"name": "side"}]}}
T0 = datetime(2026, 11, 25, 21, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 21, 0, 5, tzinfo=UTC)

SAMPLE = PodUsage(
    uid=UID, name="burn", namespace="team", timestamp=T1,
    containers=(
        ContainerUsage("main", 12_500_000_000, 300 * 1024 * 1024, start_time=T0, timestamp=T1,
                       cpu_usage_nano_cores=990_000_000),
        ContainerUsage("side", 40_000_000, 5 * 1024 * 1024, start_time=T0, timestamp=T1),
    ),
    cpu_usage_core_nanoseconds=13_000_000_000, memory_working_set_bytes=320 * 1024 * 1024,
)


# ---- wire models -------------------------------------------------------------------------------


def test_pod_usage_encodes_with_the_documented_keys() -> None:
    wire = json.loads(encode(SAMPLE))
    assert wire == {
        "UID": UID, "name": "burn", "namespace": "team", "timestamp": "2026-11-25T21:00:05.000000Z",
        "cpuUsageCoreNanoSeconds": 13_000_000_000, "memoryWorkingSetBytes": 335544320,
        "containers": [
            {"name": "main", "startTime": "2026-11-25T21:00:00.123456Z",
             "timestamp": "2026-11-25T21:00:05.000000Z", "cpuUsageCoreNanoSeconds": 12_500_000_000,
             "cpuUsageNanoCores": 990_000_000, "memoryWorkingSetBytes": 314572800},
            {"name": "side", "startTime": "2026-11-25T21:00:00.123456Z",
             "timestamp": "2026-11-25T21:00:05.000000Z", "cpuUsageCoreNanoSeconds": 40_000_000,
             "memoryWorkingSetBytes": 5242880},
        ],
    }


def test_pod_usage_round_trips() -> None:
    assert PodUsage.from_wire(json.loads(encode(SAMPLE))) == SAMPLE


def test_optional_figures_are_left_out_and_decode_as_none() -> None:
    minimal = PodUsage(uid=UID, name="p", namespace="n",
                       containers=(ContainerUsage("c", 1, 2),))
    wire = json.loads(encode(minimal))
    assert wire == {"UID": UID, "name": "p", "namespace": "n",
                    "containers": [{"name": "c", "cpuUsageCoreNanoSeconds": 1, "memoryWorkingSetBytes": 2}]}
    decoded = PodUsage.from_wire(wire)
    assert decoded.cpu_usage_core_nanoseconds is None and decoded.timestamp is None
    assert decoded.containers[0].cpu_usage_nano_cores is None


def test_pod_totals_default_to_the_sum_of_the_containers() -> None:
    pod = PodUsage(uid=UID, name="p", namespace="n",
                   containers=(ContainerUsage("a", 10, 100), ContainerUsage("b", 5, 50)))
    assert (pod.cpu_total, pod.memory_total) == (15, 150)
    assert (SAMPLE.cpu_total, SAMPLE.memory_total) == (13_000_000_000, 320 * 1024 * 1024)


def test_times_with_offsets_and_nanoseconds_are_accepted() -> None:
    decoded = ContainerUsage.from_wire({"name": "c", "timestamp": "2026-11-25T22:00:05.123456789+01:00",
                                        "cpuUsageCoreNanoSeconds": 1, "memoryWorkingSetBytes": 1})
    assert decoded.timestamp is not None
    assert format_time(decoded.timestamp) == "2026-11-25T21:00:05.123456Z"


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"name": "p"}, "UID"),
        ({"UID": UID, "containers": {"name": "c"}}, "containers"),
        ({"UID": UID, "containers": [{"cpuUsageCoreNanoSeconds": 1}]}, "containers[0].name"),
        ({"UID": UID, "containers": [{"name": "c", "cpuUsageCoreNanoSeconds": -1}]},
         "containers[0].cpuUsageCoreNanoSeconds"),
        ({"UID": UID, "containers": [{"name": "c", "memoryWorkingSetBytes": 1.5}]},
         "containers[0].memoryWorkingSetBytes"),
        ({"UID": UID, "containers": [{"name": "c", "cpuUsageNanoCores": "fast"}]},
         "containers[0].cpuUsageNanoCores"),
        ({"UID": UID, "containers": [{"name": "c", "startTime": "yesterday"}]}, "containers[0].startTime"),
        ({"UID": UID, "memoryWorkingSetBytes": 1 << 64}, "memoryWorkingSetBytes"),
        ({"UID": UID, "containers": [{"name": "c"}, {"name": "c"}]}, "containers"),
    ],
)
def test_bad_usage_documents_name_the_field(document: dict[str, Any], path: str) -> None:
    with pytest.raises(WireFormatError) as caught:
        PodUsage.from_wire(document)
    assert caught.value.path == path


# ---- server and client -------------------------------------------------------------------------


class MeasuringBackend(FakeBackend):
    """The in-memory fake plugin, plus a usage answer for the pods it is asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.usage_calls: list[list[KubeObject]] = []

    async def usage(self, pods: list[KubeObject]) -> Sequence[PodUsage]:
        self.usage_calls.append(pods)
        return [SAMPLE for pod in pods if pod["metadata"]["uid"] == UID]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pu-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def serve(app: web.Application, short_tmp: Path) -> AsyncIterator[tuple[str, str]]:
    server = await start_server(app, [f"unix://{short_tmp}/plugin.sock", "http://127.0.0.1:0"])
    try:
        yield server.urls[0], server.urls[1]
    finally:
        await server.close()


@pytest.fixture
def measuring() -> MeasuringBackend:
    return MeasuringBackend()


@pytest.fixture
async def urls(measuring: MeasuringBackend, short_tmp: Path) -> AsyncIterator[tuple[str, str]]:
    async for pair in serve(make_app(measuring), short_tmp):
        yield pair


def test_a_backend_with_usage_is_a_usage_backend() -> None:
    assert isinstance(MeasuringBackend(), UsageBackend)
    assert not isinstance(FakeBackend(), UsageBackend)


@pytest.mark.parametrize("transport", [0, 1], ids=["unix", "tcp"])
async def test_usage_round_trips_through_client_and_server(
    urls: tuple[str, str], measuring: MeasuringBackend, transport: int
) -> None:
    other = {"metadata": {"name": "x", "namespace": "team", "uid": "other"}}
    async with PluginClient(ClientConfig(endpoint=Endpoint.parse(urls[transport]))) as client:
        answer = await client.usage([POD, other])
    assert answer == [SAMPLE]
    assert measuring.usage_calls == [[POD, other]]


async def test_usage_of_no_pods_sends_no_request(urls: tuple[str, str], measuring: MeasuringBackend) -> None:
    async with PluginClient(ClientConfig(endpoint=Endpoint.parse(urls[1]))) as client:
        assert await client.usage([]) == []
    assert measuring.usage_calls == []


async def test_the_route_answers_an_empty_body_with_an_empty_list(urls: tuple[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        for body in (b"", b"[]", b"null"):
            async with session.get(urls[1] + "/usage", data=body) as response:
                assert response.status == 200
                assert await response.json() == []


async def test_the_route_refuses_a_body_that_is_not_a_pod_list(urls: tuple[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(urls[1] + "/usage", data=b'{"metadata": {}}') as response:
            assert response.status == 400
            assert "expected a list of v1.Pod" in await response.text()
        async with session.get(urls[1] + "/usage", data=b'[1]') as response:
            assert response.status == 400
            assert "[0]" in await response.text()


async def test_a_plugin_without_usage_answers_404_and_the_client_says_not_supported(
    short_tmp: Path,
) -> None:
    async for _unix, url in serve(make_app(FakeBackend()), short_tmp):
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(url))) as client:
            with pytest.raises(UsageNotSupported) as caught:
                await client.usage([POD])
    assert caught.value.status == 404
    assert isinstance(caught.value, PermanentPluginError)
    assert caught.value.op == "usage"


async def junk_usage(request: web.Request) -> web.Response:
    return web.json_response([{"UID": UID, "containers": [{"name": "c", "cpuUsageCoreNanoSeconds": -5}]}])


async def test_a_malformed_usage_answer_is_a_wire_format_error_naming_the_field(short_tmp: Path) -> None:
    app = web.Application()
    app.router.add_get("/usage", junk_usage)
    async for _unix, url in serve(app, short_tmp):
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(url))) as client:
            with pytest.raises(WireFormatError) as caught:
                await client.usage([POD])
    assert caught.value.path == "[0].containers[0].cpuUsageCoreNanoSeconds"
    assert caught.value.op == "usage"

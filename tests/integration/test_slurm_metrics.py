"""The SLURM plugin's Prometheus /metrics, on its own listener, against the real testbed SLURM: the
scrape parses with the Prometheus text parser and the counters move when a pod is created."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_slurm_plugin import Plugin, make_pod, running
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def plugin(plain_plugin: Plugin) -> AsyncIterator[tuple[Plugin, str]]:  # noqa: F811
    port = free_port()
    plain_plugin.extra_config = f"MetricsAddress: 127.0.0.1:{port}\n"
    await plain_plugin.stop()
    await plain_plugin.start()
    yield plain_plugin, f"http://127.0.0.1:{port}/metrics"


async def scrape(url: str) -> dict[str, list[Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_counters_move_when_a_pod_is_created(plugin: tuple[Plugin, str]) -> None:
    p, url = plugin
    before = await scrape(url)
    pod = make_pod("metered", containers=[{"name": "c", "image": "busybox", "command": ["sleep", "30"]}])
    await p.create(pod)
    await p.wait_for(pod, running, "the pod to run")
    after = await scrape(url)

    sbatch = "vnode_slurm_command_duration_seconds"
    assert value(after[sbatch], f"{sbatch}_count", command="sbatch", outcome="ok") == \
        value(before[sbatch], f"{sbatch}_count", command="sbatch", outcome="ok") + 1
    assert value(after[sbatch], f"{sbatch}_count", command="squeue", outcome="ok") >= 1
    assert value(after[sbatch], f"{sbatch}_bucket", command="sbatch", outcome="ok", le="+Inf") >= 1
    requests = "vnode_slurm_plugin_http_requests"
    assert value(after[requests], f"{requests}_total", route="/create", method="POST", code="200") == 1
    assert value(after[requests], f"{requests}_total", route="/status", code="200") >= 1
    assert value(after["vnode_slurm_jobs"], "vnode_slurm_jobs", state="RUNNING") == 1
    assert value(after["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0


async def test_unknown_routes_are_counted_as_unmatched(plugin: tuple[Plugin, str]) -> None:
    p, url = plugin
    connector = aiohttp.UnixConnector(path=str(p.socket))
    async with aiohttp.ClientSession(connector=connector) as session, session.get("http://plugin/nope") as response:
        assert response.status == 404
    after = await scrape(url)
    assert value(after["vnode_slurm_plugin_http_requests"], "vnode_slurm_plugin_http_requests_total",
                 route="unmatched", code="404") == 1

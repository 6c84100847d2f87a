"""The SLURM plugin's Prometheus /metrics, on its own listener, against the real testbed SLURM: the
scrape parses with the Prometheus text parser and the counters move when a pod is created, deleted,
measured (/usage: sstat while running, sacct once finished) and when a finished job has left the queue
(status: sacct)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Testbed
from tests.integration.test_slurm_plugin import WAIT, Plugin, make_pod, running, terminated
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def plugin(plain_plugin: Plugin, testbed: Testbed) -> AsyncIterator[tuple[Plugin, str]]:  # noqa: F811
    port = free_port()
    plain_plugin.extra_config = f"MetricsAddress: 127.0.0.1:{port}\nSstatPath: {testbed.slurm_bin_dir / 'sstat'}\n"
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


COMMANDS = "vnode_slurm_command_duration_seconds"


def runs(scraped: dict[str, list[Any]], command: str) -> float:
    """How many times the plugin ran `command` successfully."""
    return value(scraped[COMMANDS], f"{COMMANDS}_count", command=command, outcome="ok")


async def test_delete_counts_scancel_and_usage_counts_sstat_then_sacct(plugin: tuple[Plugin, str]) -> None:
    p, url = plugin
    busy = make_pod("measured", containers=[{"name": "c", "image": "busybox", "command": ["sleep", "600"]}])
    await p.create(busy)
    await p.wait_for(busy, running, "the pod to run")
    before = await scrape(url)
    assert [u.uid for u in await p.c.usage([busy])] == [busy["metadata"]["uid"]]
    measured = await scrape(url)
    assert runs(measured, "sstat") == runs(before, "sstat") + 1  # one sstat for the running job
    await p.c.delete(busy)
    deleted = await scrape(url)
    assert runs(deleted, "scancel") == runs(measured, "scancel") + 1

    quick = make_pod("finished", containers=[{"name": "c", "image": "busybox", "command": ["true"]}])
    await p.create(quick)
    await p.wait_for(quick, terminated, "the pod to end")
    ended = await scrape(url)
    await p.c.usage([quick])  # a finished job's final CPU comes from accounting
    after = await scrape(url)
    assert runs(after, "sacct") == runs(ended, "sacct") + 1
    assert runs(after, "sstat") == runs(ended, "sstat")  # nothing is running any more


async def test_a_finished_job_that_left_the_queue_is_looked_up_with_sacct(plugin: tuple[Plugin, str], testbed: Testbed) -> None:
    """Nobody asks for the pod's status until slurmctld has forgotten the finished job (MinJobAge on
    the testbed): squeue no longer lists it, so the state comes from sacct."""
    p, url = plugin
    pod = make_pod("forgotten", containers=[{"name": "c", "image": "busybox", "command": ["true"]}])
    job_id = await p.create(pod)
    deadline = asyncio.get_running_loop().time() + 300 + WAIT  # MinJobAge (120 s) plus a generous bound
    while (await testbed.arun([testbed.squeue, "-h", "--states=all", "-j", job_id, "-o", "%i"], check=False)).stdout.strip():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"squeue still lists job {job_id}")
        await asyncio.sleep(2)
    before = await scrape(url)
    status = await p.status(pod)
    after = await scrape(url)
    assert runs(after, "sacct") == runs(before, "sacct") + 1
    assert status.jid == job_id and status.containers[0].state.terminated is not None  # type: ignore[index]
    assert status.containers[0].state.terminated.exit_code == 0  # type: ignore[index]

"""The agent's Prometheus endpoint, scraped from a full agent (in this process) against the real
testbed apiserver with the in-test fake plugin: /metrics on the health port parses with the
Prometheus text parser, and its figures move as a pod is created, runs and is deleted."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_support import (
    eventually,
    kapply,
    kget,
    pod_manifest,
    running_agent,
    wait_default_service_account,
    wait_gone,
    wait_phase,
)
from tests.conftest import Testbed
from tests.deploy_support import free_port
from tests.integration.test_slurm_plugin import Plugin
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from vnode.node.metrics import FAMILIES

pytestmark = pytest.mark.integration


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> tuple[Samples, set[str]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name for f in families}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_on_the_health_port_move_as_a_pod_is_created_runs_and_is_deleted(
        testbed: Testbed, namespace: str) -> None:
    await wait_default_service_account(testbed, namespace)
    port = free_port()
    async with running_agent(testbed, config={"HealthPort": port}) as agent:
        before, families = await scrape(port)
        assert set(FAMILIES) <= families
        assert get(before, "vnode_plugin_reachable") == 1
        assert get(before, "vnode_pods", phase="Running") == 0
        assert get(before, "vnode_plugin_calls_total", op="ping", outcome="ok") >= 1
        assert get(before, "vnode_apiserver_requests_total", verb="POST", resource="nodes") == 1
        assert get(before, "process_resident_memory_bytes") > 0
        assert ("vnode_watch_restarts_total", (("reason", "expired"), ("resource", "pods"))) in before  # at 0

        await kapply(testbed, pod_manifest("counted", namespace, agent.node, containers=[
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]))
        await wait_phase(testbed, namespace, "counted", "Running")

        async def running() -> Samples | None:
            now, _ = await scrape(port)
            # (the lag monitor samples every 0.5 s: a fast run may scrape before its first sample)
            return now if get(now, "vnode_pods", phase="Running") == 1 and get(now, "vnode_event_loop_lag_seconds_count") else None

        during = await eventually(running, "vnode_pods{phase=Running} to be 1 and a loop lag sample")
        assert get(during, "vnode_plugin_calls_total", op="create", outcome="ok") == 1
        assert get(during, "vnode_plugin_call_duration_seconds_count", op="create", outcome="ok") == 1
        assert get(during, "vnode_plugin_calls_total", op="status", outcome="ok") >= 1
        # The pod reached the agent through its watch (the first scrape may precede the WATCH).
        assert get(during, "vnode_apiserver_requests_total", verb="WATCH", resource="pods") >= 1
        assert get(during, "vnode_apiserver_requests_total", verb="PATCH", resource="pods/status") > \
            get(before, "vnode_apiserver_requests_total", verb="PATCH", resource="pods/status")

        await testbed.akubectl("-n", namespace, "delete", "pod", "counted", "--wait=false")
        await wait_gone(testbed, "pod", "counted", "-n", namespace)

        async def deleted() -> Samples | None:
            now, _ = await scrape(port)
            return now if get(now, "vnode_plugin_calls_total", op="delete", outcome="ok") == 1 else None

        after = await eventually(deleted, "vnode_plugin_calls_total{op=delete} to be 1")
        assert get(after, "vnode_pods", phase="Running") == 0
        print_sample(after)


def print_sample(samples: Samples) -> None:
    """The vnode_ series of a real scrape, for the README's sample (pytest -s shows it)."""
    lines: list[str] = []
    for (name, labels), value in sorted(samples.items()):
        if name.startswith("vnode_") and not name.endswith("_bucket") and not name.endswith("_created"):
            shown: Any = int(value) if value == int(value) else round(value, 6)
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {shown}" if labels else f"{name} {shown}")
    print("\n" + "\n".join(lines))


async def test_capacity_from_the_slurm_plugins_ping_does_not_rewrite_the_node_on_every_ping(
        testbed: Testbed, plain_plugin: Plugin) -> None:  # noqa: F811
    # The metrics showed it: the plugin reports memory as "...Mi" and pods as "1000", the apiserver
    # stores "...Gi" and "1k", and a string comparison patched nodes/status after every ping.
    port = free_port()
    config = {"InterlinkURL": f"unix://{plain_plugin.socket}", "HealthPort": port}
    async with running_agent(testbed, config=config) as agent:
        async def pinged() -> Samples | None:
            now, _ = await scrape(port)
            return now if get(now, "vnode_plugin_calls_total", op="ping", outcome="ok") >= 6 else None

        samples = await eventually(pinged, "six answered pings")
        node = await kget(testbed, "node", agent.node)
        assert node is not None and node["status"]["capacity"]["pods"] == "1k"  # canonical, as stored
        assert get(samples, "vnode_apiserver_requests_total", verb="PATCH", resource="nodes/status") <= 1

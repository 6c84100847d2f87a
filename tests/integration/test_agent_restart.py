"""The agent as a real process: kill -9 in the middle of a burst never double-submits, pods deleted
while it is down are deleted remotely, and SIGTERM is a clean exit that leaves remote jobs running."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import (
    agent_process,
    cleanup_node,
    eventually,
    kapply,
    kget,
    pod_manifest,
    short_socket_dir,
    wait_default_service_account,
    wait_gone,
    wait_ready,
    write_config,
)
from tests.conftest import Testbed, unique
from tests.fakeplugin import FakeBackend, FakePlugin


@pytest.fixture
async def ns(testbed: Testbed, namespace: str) -> str:
    """The test's namespace, once pods can be created in it (the default ServiceAccount exists)."""
    await wait_default_service_account(testbed, namespace)
    return namespace


async def _pods(testbed: Testbed, ns: str) -> list[dict[str, Any]]:
    pods = await kget(testbed, "pods", "-n", ns)
    return list((pods or {}).get("items", []))


async def test_kill_9_mid_burst_of_50_pods_then_restart_gives_every_pod_exactly_one_create(
        testbed: Testbed, ns: str, tmp_path: Path) -> None:
    # A slow plugin keeps many creates in flight when the agent dies.
    backend = FakeBackend(delays={"create": 0.3})
    sockets = short_socket_dir()
    node = unique("vn-kill")
    async with FakePlugin(backend, f"unix://{sockets}/plugin.sock") as plugin:
        # Creates recorded just before the kill are waited for up to the plugin timeout before
        # being resubmitted (they may still be in flight); keep that wait short here.
        config = write_config(tmp_path / "vnode.yaml", plugin.url, PodWorkers=8,
                              PluginTimeoutSeconds=5)
        agent = agent_process(testbed, node, config, tmp_path / "agent.log")
        try:
            await agent.start()
            await wait_ready(testbed, node)
            burst = {"apiVersion": "v1", "kind": "List",
                     "items": [pod_manifest(f"b-{i:02d}", ns, node) for i in range(50)]}
            await kapply(testbed, burst)
            await backend.wait_for_calls("create", count=10, timeout=120)
            await agent.kill9()
            in_flight_at_kill = len(backend.calls_of("create"))
            assert 10 <= in_flight_at_kill < 50, agent.log_tail()

            await agent.start()  # a new process, same node, same config

            async def all_running() -> bool:
                pods = await _pods(testbed, ns)
                return len(pods) == 50 and all(p["status"].get("phase") == "Running" for p in pods)
            await eventually(all_running, "all 50 pods Running after the restart", timeout=300)
            pods = await _pods(testbed, ns)
            counts = {p["metadata"]["name"]: backend.create_count(p["metadata"]["uid"]) for p in pods}
            assert counts == {p["metadata"]["name"]: 1 for p in pods}, agent.log_tail()
            for p in pods:
                assert p["metadata"]["annotations"]["JobID"] == backend.pods[p["metadata"]["uid"]].jid
        finally:
            await agent.terminate()
            await cleanup_node(testbed, node)
            shutil.rmtree(sockets, ignore_errors=True)


async def test_pods_deleted_while_the_agent_is_down_are_deleted_remotely(
        testbed: Testbed, ns: str, tmp_path: Path) -> None:
    backend = FakeBackend()
    sockets = short_socket_dir()
    node = unique("vn-down")
    async with FakePlugin(backend, f"unix://{sockets}/plugin.sock") as plugin:
        config = write_config(tmp_path / "vnode.yaml", plugin.url)
        agent = agent_process(testbed, node, config, tmp_path / "agent.log")
        try:
            await agent.start()
            await wait_ready(testbed, node)
            for name in ("graceful", "forced", "kept"):
                await kapply(testbed, pod_manifest(name, ns, node))

            async def running() -> bool:
                pods = await _pods(testbed, ns)
                return len(pods) == 3 and all(p["status"].get("phase") == "Running" for p in pods)
            await eventually(running, "3 pods Running")
            uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await _pods(testbed, ns)}
            assert await agent.terminate() == 0

            # While the agent is down: one graceful delete (stays Terminating), one force delete
            # (the object is gone at once; only the agent's job ledger remembers the job).
            await testbed.akubectl("delete", "pod", "graceful", "-n", ns, "--wait=false")
            await testbed.akubectl("delete", "pod", "forced", "-n", ns, "--grace-period=0",
                                   "--force", "--wait=false")
            await wait_gone(testbed, "pod", "forced", "-n", ns)
            assert backend.deleted == []

            await agent.start()
            await wait_gone(testbed, "pod", "graceful", "-n", ns)
            await eventually(lambda: _deleted(backend, uids["forced"]), "the forced pod's remote delete")
            assert sorted(backend.deleted) == sorted([uids["graceful"], uids["forced"]])
            assert set(backend.pods) == {uids["kept"]}
            assert backend.create_count(uids["kept"]) == 1
        finally:
            await agent.terminate()
            await cleanup_node(testbed, node)
            shutil.rmtree(sockets, ignore_errors=True)


async def _deleted(backend: FakeBackend, uid: str) -> bool:
    return uid in backend.deleted


async def test_sigterm_exits_zero_and_leaves_remote_jobs_running(
        testbed: Testbed, ns: str, tmp_path: Path) -> None:
    backend = FakeBackend()
    sockets = short_socket_dir()
    node = unique("vn-term")
    async with FakePlugin(backend, f"unix://{sockets}/plugin.sock") as plugin:
        agent = agent_process(testbed, node, write_config(tmp_path / "vnode.yaml", plugin.url),
                              tmp_path / "agent.log")
        try:
            await agent.start()
            await wait_ready(testbed, node)
            await kapply(testbed, pod_manifest("survivor", ns, node))

            async def running() -> bool:
                pods = await _pods(testbed, ns)
                return bool(pods) and pods[0]["status"].get("phase") == "Running"
            await eventually(running, "the pod Running")
            assert await agent.terminate() == 0, agent.log_tail()
            assert backend.deleted == [] and len(backend.pods) == 1
            assert "stopping" in agent.log_tail()
            await asyncio.sleep(0)
        finally:
            await agent.terminate()
            await cleanup_node(testbed, node)
            shutil.rmtree(sockets, ignore_errors=True)

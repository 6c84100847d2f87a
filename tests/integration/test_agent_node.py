"""The virtual Node against the real apiserver: registration, Ready from plugin health, the Lease,
ping-reported capacity and taints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from plugin_client.models import Accelerator, PingResources, PingResponse, Taint
from tests.agent_support import (
    eventually,
    kget,
    node_condition,
    running_agent,
    wait_ready,
)
from tests.conftest import Testbed
from tests.fakeplugin import FakeBackend


def _micro(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")


async def test_node_registers_with_interlink_labels_taint_capacity_and_turns_ready(testbed: Testbed) -> None:
    config = {"NodeLabels": ["site=test"], "Resources": {"CPU": "64", "Memory": "256Gi", "Pods": "500",
              "Accelerators": [{"ResourceType": "nvidia.com/gpu", "Model": "a100", "Available": "4"}]}}
    async with running_agent(testbed, config=config) as agent:
        node = await kget(testbed, "node", agent.node)
        assert node is not None
        labels = node["metadata"]["labels"]
        assert labels["type"] == "virtual-kubelet"
        assert labels["virtual-node.interlink/type"] == "virtual-kubelet"
        assert labels["kubernetes.io/role"] == "agent"
        assert labels["kubernetes.io/hostname"] == agent.node
        assert labels["site"] == "test" and labels["nvidia-gpu-type"] == "a100"
        assert {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"} in \
            node["spec"]["taints"]
        status = node["status"]
        for key in ("capacity", "allocatable"):
            assert status[key]["cpu"] == "64" and status[key]["memory"] == "256Gi"
            assert status[key]["pods"] == "500" and status[key]["nvidia.com/gpu"] == "4"
        assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
        assert agent.app.agent is not None and agent.app.agent.kubelet is not None
        assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent.app.agent.kubelet.port
        assert status["nodeInfo"]["kubeletVersion"].endswith("-vnode")
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Ready"] == "True"
        for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"):
            assert conditions[ctype] == "False"


async def test_lease_is_owned_by_the_node_and_renewed(testbed: Testbed) -> None:
    async with running_agent(testbed) as agent:
        node = await kget(testbed, "node", agent.node)
        lease = await eventually(lambda: kget(testbed, "lease", agent.node, "-n", "kube-node-lease"),
                                 "the node's lease")
        assert lease["spec"]["holderIdentity"] == agent.node
        assert lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": agent.node, "uid": node["metadata"]["uid"]}]
        first = _micro(lease["spec"]["renewTime"])

        async def renewed() -> bool:
            again = await kget(testbed, "lease", agent.node, "-n", "kube-node-lease")
            return bool(again) and _micro(again["spec"]["renewTime"]) > first
        await eventually(renewed, "the lease to be renewed", timeout=60)


async def test_a_plugin_outage_flips_ready_and_back(testbed: Testbed) -> None:
    async with running_agent(testbed) as agent:
        await agent.plugin.stop()
        down = await wait_ready(testbed, agent.node, "False")
        assert down["reason"] == "PluginUnreachable"
        assert agent.plugin.url in down["message"]
        connectivity = await node_condition(testbed, agent.node, "InterlinkConnectivity")
        assert connectivity is not None and connectivity["status"] == "False"
        network = await node_condition(testbed, agent.node, "NetworkUnavailable")
        assert network is not None and network["status"] == "False"
        await agent.plugin.start()
        up = await wait_ready(testbed, agent.node, "True")
        assert up["reason"] == "KubeletReady"

        async def node_events() -> list[str] | None:
            events = await kget(testbed, "events", "-n", "default",
                                f"--field-selector=involvedObject.name={agent.node}")
            reasons = [e["reason"] for e in (events or {}).get("items", [])]
            return reasons if {"NodeNotReady", "NodeReady"} <= set(reasons) else None
        await eventually(node_events, "NodeNotReady and NodeReady events on the node")


async def test_ping_reported_resources_and_taints_update_the_node(testbed: Testbed) -> None:
    backend = FakeBackend(ping_response=PingResponse(
        resources=PingResources(cpu="12", memory="48Gi", pods="30",
                                accelerators=(Accelerator("nvidia.com/gpu", "2"),)),
        taints=(Taint("maintenance", "soon", "PreferNoSchedule"),)))
    async with running_agent(testbed, backend=backend, config={"NodeTaints": [
            {"Key": "from-config", "Value": "x", "Effect": "NoSchedule"}]}) as agent:
        async def updated() -> dict[str, Any] | None:
            node = await kget(testbed, "node", agent.node)
            ok = node and node["status"]["capacity"].get("cpu") == "12"
            return node if ok else None
        node = await eventually(updated, "capacity from the ping")
        assert node["status"]["allocatable"]["memory"] == "48Gi"
        assert node["status"]["capacity"]["pods"] == "30"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        keys = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
        assert ("virtual-node.interlink/no-schedule", "NoSchedule") in keys
        assert ("maintenance", "PreferNoSchedule") in keys
        assert ("from-config", "NoSchedule") not in keys  # the plugin's taints replace the config's


async def test_a_deleted_node_is_registered_again(testbed: Testbed) -> None:
    async with running_agent(testbed) as agent:
        old = await kget(testbed, "node", agent.node)
        await testbed.akubectl("delete", "node", agent.node, "--wait=true")

        async def recreated() -> dict[str, Any] | None:
            node = await kget(testbed, "node", agent.node)
            return node if node and node["metadata"]["uid"] != old["metadata"]["uid"] else None
        new = await eventually(recreated, "the node to be registered again")

        async def lease_follows() -> bool:
            lease = await kget(testbed, "lease", agent.node, "-n", "kube-node-lease")
            refs = (lease or {}).get("metadata", {}).get("ownerReferences", [])
            return any(r["uid"] == new["metadata"]["uid"] for r in refs)
        await eventually(lease_follows, "the lease to point at the new node")

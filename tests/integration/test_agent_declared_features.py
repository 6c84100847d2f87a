"""The agent's Node declares `ExtendWebSocketsToKubelet` on Kubernetes 1.36+ (and nothing on 1.35).

On 1.36 the apiserver passes kubectl exec's WebSocket (`v5.channel.k8s.io`) straight to a kubelet
only when its Node lists that feature in `status.declaredFeatures`; otherwise it translates to
SPDY/3.1 itself. kubectl also falls back to SPDY on its own, so "exec worked" proves nothing about
the path: the tests read which upgrade the agent's kubelet server accepted
(`KubeletServer.upgrades`). On 1.35 the field is alpha-gated and dropped, so declaring it there
would make the stored Node differ from the agent's forever: the 1.35 test counts the agent's
`PATCH nodes/status` requests over several pings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.agent_support import (
    InProcessAgent,
    eventually,
    kapply,
    kget,
    pod_manifest,
    running_agent,
    wait_default_service_account,
    wait_phase,
)
from tests.conftest import KubeTestbed, Testbed
from vnode.kubelet.endpoint import KubeletEndpoint

pytestmark = pytest.mark.integration

WEBSOCKET_FEATURE = "ExtendWebSocketsToKubelet"
WS_V5 = ("websocket", "v5.channel.k8s.io")


@pytest.fixture
def namespace_136(testbed_136: KubeTestbed, request: pytest.FixtureRequest) -> Iterator[str]:
    name = testbed_136.create_namespace(request.node.name[:30])
    yield name
    testbed_136.delete_namespace(name)


def kubelet_of(agent: InProcessAgent) -> KubeletEndpoint:
    assert agent.app.agent is not None and agent.app.agent.kubelet is not None
    return agent.app.agent.kubelet


def status_patches(agent: InProcessAgent) -> int:
    assert agent.app.agent is not None
    return agent.app.agent.kube.requests["PATCH nodes/status"]


async def server_minor(testbed: KubeTestbed) -> str:
    version = json.loads((await testbed.akubectl("version", "-o", "json")).stdout)
    return str(version["serverVersion"]["minor"])


async def test_on_136_the_agents_node_declares_the_feature_and_kubectl_exec_arrives_over_websocket(
        testbed_136: KubeTestbed, namespace_136: str) -> None:
    assert await server_minor(testbed_136) == "36"
    ns = namespace_136
    await wait_default_service_account(testbed_136, ns)
    async with running_agent(testbed_136) as agent:
        node = await kget(testbed_136, "node", agent.node)
        assert node is not None and node["status"]["declaredFeatures"] == [WEBSOCKET_FEATURE]

        await kapply(testbed_136, pod_manifest("shell", ns, agent.node))
        await wait_phase(testbed_136, ns, "shell", "Running")
        out = await testbed_136.akubectl("exec", "shell", "-n", ns, "-c", "main", "--",
                                         "echo", "over", "websocket")
        assert out.stdout == "over websocket\n"
        assert kubelet_of(agent).server.upgrades == {WS_V5: 1}
        failed = await testbed_136.akubectl("exec", "shell", "-n", ns, "--", "exit", "3", check=False)
        assert failed.returncode == 3, failed.stderr
        assert kubelet_of(agent).server.upgrades == {WS_V5: 2}


async def test_on_136_the_setting_off_leaves_the_node_undeclared_and_exec_on_spdy(
        testbed_136: KubeTestbed, namespace_136: str) -> None:
    ns = namespace_136
    await wait_default_service_account(testbed_136, ns)
    config = {"KubeletDeclareWebSocket": False}
    async with running_agent(testbed_136, config=config) as agent:
        node = await kget(testbed_136, "node", agent.node)
        assert node is not None and "declaredFeatures" not in node["status"]

        await kapply(testbed_136, pod_manifest("shell", ns, agent.node))
        await wait_phase(testbed_136, ns, "shell", "Running")
        out = await testbed_136.akubectl("exec", "shell", "-n", ns, "--", "echo", "over", "spdy")
        assert out.stdout == "over spdy\n"
        assert [transport for transport, _ in kubelet_of(agent).server.upgrades] == ["spdy"]


async def test_on_135_the_node_declares_nothing_and_is_not_patched_on_every_ping(
        testbed: Testbed) -> None:
    assert await server_minor(testbed) == "35"
    async with running_agent(testbed) as agent:
        node = await kget(testbed, "node", agent.node)
        assert node is not None and "declaredFeatures" not in node["status"]
        before = status_patches(agent)
        seen = len(agent.backend.calls_of("ping"))

        async def five_more_pings() -> bool:
            return len(agent.backend.calls_of("ping")) >= seen + 5
        await eventually(five_more_pings, "five more pings (PingPeriodSeconds 1)")
        # Nothing changed on the node, and the 60 s heartbeat is not due: no status write at all.
        assert status_patches(agent) == before
        node = await kget(testbed, "node", agent.node)
        assert node is not None and "declaredFeatures" not in node["status"]

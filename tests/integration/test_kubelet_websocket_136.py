"""kubectl exec over WebSocket end to end, through a real Kubernetes 1.36 apiserver, to vnode's kubelet front.

On 1.36 the apiserver passes kubectl's WebSocket (`v5.channel.k8s.io`) straight to the kubelet when the
`ExtendWebSocketsToKubelet` gate is on (beta, default on) and the Node lists `ExtendWebSocketsToKubelet`
in `status.declaredFeatures` (`NodeDeclaredFeatures`, beta, default on); otherwise it translates to
SPDY/3.1 itself, as every release up to 1.35 does (pkg/registry/core/pod/rest/subresources.go).

kubectl falls back to SPDY by itself when a WebSocket upgrade fails, so "kubectl exec worked" proves
nothing about the path. Each test therefore also checks which upgrade our kubelet server accepted
(`KubeletServer.upgrades`) and, from the apiserver's side, its routing counter
`apiserver_websocket_streaming_requests_total{subresource="exec",proxy_type=...}`.

Runs on `testbed_136`: a second control plane (1.36.3, apiserver on 127.0.0.1:6543, its own CA), next
to the shared 1.35 one. The exec backend runs real local subprocesses (tests/kubelet_support.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import KubeTestbed, unique
from tests.integration.test_kubelet_apiserver import create_pod
from tests.kubelet_support import StaticLogs, StaticPods, SubprocessExec
from vnode.kube.client import KubeClient
from vnode.kube.reviews import ApiReviewClient
from vnode.kubelet import certs
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

pytestmark = pytest.mark.integration

WEBSOCKET_FEATURE = "ExtendWebSocketsToKubelet"  # the feature gate's name is what a node declares
WS_V5 = ("websocket", "v5.channel.k8s.io")  # kubectl 1.36 offers only v5 over WebSocket


@dataclass
class Node136:
    testbed: KubeTestbed
    namespace: str
    node: str
    server: KubeletServer
    execs: SubprocessExec
    pods: StaticPods

    def kubectl_argv(self, *args: str) -> list[str]:
        return [str(self.testbed.kubectl), f"--kubeconfig={self.testbed.kubeconfig}", "-n", self.namespace, *args]

    async def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return await self.testbed.akubectl("-n", self.namespace, *args, input=input, check=check)


async def register_node(testbed: KubeTestbed, node: str, port: int, declared: list[str]) -> dict:
    """A Node whose kubelet is us (InternalIP 127.0.0.1, our port), declaring `declared` features.

    Status goes through the status subresource, as a kubelet writes it; returns the stored Node."""
    manifest = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"type": "virtual-kubelet"}}}
    await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
    status: dict = {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}],
    }
    if declared:
        status["declaredFeatures"] = sorted(declared)  # the apiserver insists on sorted, unique names
    await testbed.akubectl(
        "patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status})
    )
    return json.loads((await testbed.akubectl("get", "node", node, "-o", "json")).stdout)


@pytest.fixture
def namespace_136(testbed_136: KubeTestbed, request: pytest.FixtureRequest) -> Iterator[str]:
    name = testbed_136.create_namespace(request.node.name[:30])
    yield name
    testbed_136.delete_namespace(name)


@asynccontextmanager
async def kubelet_node(
    testbed: KubeTestbed, namespace: str, tmp_path: Path, declared: list[str]
) -> AsyncIterator[Node136]:
    """Serve vnode's kubelet front for a fresh Node (declaring `declared`) with one running pod `web`."""
    node = unique("vnode-ws136")
    key = certs.generate_key()
    cert = certs.self_signed(key, certs.ServingIdentity(node, ("127.0.0.1",)))
    certs.write_pair(cert, key, tmp_path / "serving.crt", tmp_path / "serving.key")
    client = await KubeClient.connect(str(testbed.kubeconfig))
    execs, pods = SubprocessExec(), StaticPods()
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host="127.0.0.1", port=0),
        # Client certificates are checked against the 1.36 instance's own CA (not the shared one's).
        tls=ServingTLS(tmp_path / "serving.crt", tmp_path / "serving.key", testbed.ca_cert),
        authority=RequestAuthority(ApiReviewClient(client), node),
        pods=pods,
        logs=StaticLogs(),
        execs=execs,
    )
    try:
        async with server:
            stored = await register_node(testbed, node, server.port, declared)
            assert stored["status"].get("declaredFeatures", []) == sorted(declared), stored["status"]
            pods.pods.append(await create_pod(testbed, namespace, "web", node))
            yield Node136(testbed, namespace, node, server, execs, pods)
    finally:
        await testbed.akubectl("delete", "node", node, "--wait=false", check=False)
        await client.close()


@pytest.fixture
async def ws_node(testbed_136: KubeTestbed, namespace_136: str, tmp_path: Path) -> AsyncIterator[Node136]:
    async with kubelet_node(testbed_136, namespace_136, tmp_path, [WEBSOCKET_FEATURE]) as n:
        yield n


@pytest.fixture
async def spdy_node(testbed_136: KubeTestbed, namespace_136: str, tmp_path: Path) -> AsyncIterator[Node136]:
    async with kubelet_node(testbed_136, namespace_136, tmp_path, []) as n:
        yield n


async def exec_routing(testbed: KubeTestbed) -> dict[str, float]:
    """The apiserver's count of exec requests by routing decision (proxied_to_kubelet / translated_at_apiserver)."""
    metrics = (await testbed.akubectl("get", "--raw", "/metrics")).stdout
    pattern = r'^apiserver_websocket_streaming_requests_total\{proxy_type="(\w+)",subresource="exec"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, metrics, re.MULTILINE)}


def routed(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)
    }


# ---- the 1.36 testbed is what the tests below assume ---------------------------------------------


async def test_the_136_apiserver_enables_websockets_to_kubelets_by_default(testbed_136: KubeTestbed) -> None:
    version = json.loads((await testbed_136.akubectl("version", "-o", "json")).stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{testbed_136.k8s_version}"
    assert version["clientVersion"]["gitVersion"] == f"v{testbed_136.k8s_version}"
    assert testbed_136.k8s_version.startswith("1.36.")
    metrics = (await testbed_136.akubectl("get", "--raw", "/metrics")).stdout
    for gate in (WEBSOCKET_FEATURE, "NodeDeclaredFeatures", "TranslateStreamCloseWebsocketRequests"):
        assert re.search(rf'^kubernetes_feature_enabled\{{name="{gate}",stage="[A-Z]*"\}} 1$', metrics, re.MULTILINE), (
            gate
        )


# ---- a Node that declares the feature: kubectl's WebSocket reaches us ------------------------------


async def test_kubectl_exec_stdout_arrives_over_a_websocket_passed_through_by_the_apiserver(ws_node: Node136) -> None:
    before = await exec_routing(ws_node.testbed)
    out = await ws_node.kubectl("exec", "web", "-c", "main", "--", "echo", "hello over websocket")
    assert out.stdout == "hello over websocket\n"
    assert ws_node.server.upgrades == {WS_V5: 1}
    assert routed(before, await exec_routing(ws_node.testbed)).get("proxied_to_kubelet", 0) >= 1
    spec = ws_node.execs.specs[-1]
    assert (spec.namespace, spec.pod, spec.container) == (ws_node.namespace, "web", "main")
    assert spec.command == ("echo", "hello over websocket")
    assert (spec.stdin, spec.stdout, spec.stderr, spec.tty) == (False, True, True, False)


async def test_kubectl_exec_pipes_stdin_and_its_end_over_websocket(ws_node: Node136) -> None:
    out = await ws_node.kubectl("exec", "-i", "web", "-c", "main", "--", "cat", input="data\n")
    assert out.stdout == "data\n"
    out = await ws_node.kubectl("exec", "-i", "web", "-c", "main", "--", "wc", "-c", input="x" * 100_000)
    assert out.stdout.strip() == "100000"  # wc only answers once stdin ended: the v5 CLOSE arrived
    assert ws_node.server.upgrades == {WS_V5: 2}


async def test_kubectl_exec_exits_with_the_remote_exit_code_over_websocket(ws_node: Node136) -> None:
    out = await ws_node.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "echo partial; exit 3", check=False)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "partial\n"
    assert ws_node.server.upgrades == {WS_V5: 1}


async def test_kubectl_exec_keeps_stderr_separate_over_websocket(ws_node: Node136) -> None:
    out = await ws_node.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "echo out; echo err >&2")
    assert (out.stdout, out.stderr) == ("out\n", "err\n")
    assert ws_node.server.upgrades == {WS_V5: 1}


async def test_kubectl_exec_with_a_tty_and_its_size_over_websocket(ws_node: Node136) -> None:
    script = shutil.which("script")
    assert script, "util-linux `script` is needed to give kubectl a terminal"
    # kubectl sends its terminal's size on the resize channel; the remote pty reports it once applied.
    remote = (
        'for i in $(seq 100); do s=$(stty size); [ "$s" = "37 111" ] && break; sleep 0.1; done; '
        'test -t 0 && echo tty-yes; echo "size $s"'
    )
    command = " ".join(
        [
            "stty rows 37 cols 111;",
            *ws_node.kubectl_argv("exec", "-it", "web", "-c", "main", "--", "sh", "-c", f"'{remote}'"),
        ]
    )
    out = await ws_node.testbed.arun([script, "-qec", command, "/dev/null"])
    assert "tty-yes" in out.stdout
    assert "size 37 111" in out.stdout
    assert ws_node.execs.specs[-1].tty
    assert ws_node.server.upgrades == {WS_V5: 1}


async def test_ten_megabytes_of_output_arrive_intact_over_websocket(ws_node: Node136, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10 * 1024 * 1024))
    proc = await asyncio.create_subprocess_exec(
        *ws_node.kubectl_argv("exec", "web", "-c", "main", "--", "cat", str(blob)),
        env=ws_node.testbed.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err
    assert out == blob.read_bytes()
    assert ws_node.server.upgrades == {WS_V5: 1}


async def test_an_exec_our_kubelet_refuses_reaches_kubectl_as_its_error(ws_node: Node136) -> None:
    # The apiserver knows pod `web`; our pod view does not (e.g. not synced yet): we answer 404.
    ws_node.pods.pods.clear()
    out = await ws_node.kubectl("exec", "web", "-c", "main", "--", "true", check=False)
    assert out.returncode != 0
    assert f"pod {ws_node.namespace}/web not found on node {ws_node.node}" in out.stderr
    assert not ws_node.server.upgrades  # refused before any switch of protocols
    assert not ws_node.execs.specs


# ---- a Node that does not declare it: the apiserver still translates to SPDY -----------------------


async def test_a_node_without_the_declared_feature_gets_spdy_from_the_136_apiserver(spdy_node: Node136) -> None:
    before = await exec_routing(spdy_node.testbed)
    out = await spdy_node.kubectl("exec", "web", "-c", "main", "--", "echo", "hello over spdy")
    assert out.stdout == "hello over spdy\n"
    assert [transport for transport, _ in spdy_node.server.upgrades] == ["spdy"]
    assert sum(spdy_node.server.upgrades.values()) == 1
    assert routed(before, await exec_routing(spdy_node.testbed)).get("translated_at_apiserver", 0) >= 1
    out = await spdy_node.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "exit 3", check=False)
    assert out.returncode == 3, out.stderr

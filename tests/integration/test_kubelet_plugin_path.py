"""kubectl logs / exec through the real apiserver, the kubelet endpoint and plugin_client to the
in-memory fake plugin (tests/fakeplugin.py): first the endpoint on its own (a hand-registered
Node), then a full agent (vnode.app.App) that registers its node, runs the pod on the plugin and
gets its serving certificate through its own CSR approver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.models import RetrievedPodData
from tests.conftest import Testbed
from tests.fakeplugin import FakeBackend, FakePlugin
from tests.integration.test_kubelet_apiserver import create_pod, register_node
from vnode.app import App
from vnode.kube.client import KubeClient
from vnode.kubelet.endpoint import EndpointOptions, start_kubelet_endpoint
from vnode.settings import settings_from_mapping

pytestmark = pytest.mark.integration

T = TypeVar("T")
# Only bounds a hang; nothing asserts on durations.
WAIT = 120.0


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last value: {last!r})")


async def kget(testbed: Testbed, *args: str) -> Any:
    done = await testbed.akubectl("get", *args, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


@dataclasses.dataclass
class Pods:
    """The pod cache the agent would have: here filled by the test."""

    pods: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def find(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((p for p in self.pods if (p["metadata"]["namespace"], p["metadata"]["name"])
                     == (namespace, name)), None)

    def list_pods(self) -> list[dict[str, Any]]:
        return list(self.pods)


@pytest.fixture
def sockets() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kpp-", dir="/tmp"))  # unix socket paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_kubectl_logs_and_exec_reach_the_plugin_through_the_endpoint(
    testbed: Testbed, namespace: str, unique_name: Callable[[str], str], sockets: Path, tmp_path: Path
) -> None:
    node = unique_name("vnode-pluginpath")
    backend = FakeBackend()
    kube = await KubeClient.connect(str(testbed.kubeconfig))
    try:
        async with FakePlugin(backend, f"unix://{sockets}/plugin.sock") as plugin, \
                PluginClient(ClientConfig(endpoint=Endpoint.parse(plugin.url))) as client:
            settings = settings_from_mapping(
                {"InterlinkURL": plugin.url, "KubeletPort": 0, "DisableCSR": True},
                nodename=node, env={"POD_IP": "127.0.0.1"})
            pods = Pods()
            endpoint = await start_kubelet_endpoint(settings, kube, pods, client,
                                                    EndpointOptions(cert_dir=tmp_path / "certs"))
            try:
                await register_node(testbed, node, endpoint.port)
                pod = await create_pod(testbed, namespace, "job", node)
                pods.pods.append(pod)
                await client.create(RetrievedPodData(pod=pod))
                uid = pod["metadata"]["uid"]
                backend.append_log(uid, "main", b"one\ntwo\nthree\n")
                backend.append_log(uid, "init", b"initialised\n")

                out = await testbed.akubectl("-n", namespace, "logs", "job", "-c", "main", "--tail=2")
                assert out.stdout == "two\nthree\n"
                assert backend.calls_of("logs")[-1].payload.pod_uid == uid
                out = await testbed.akubectl("-n", namespace, "logs", "job", "-c", "init")
                assert out.stdout == "initialised\n"
                out = await testbed.akubectl("-n", namespace, "exec", "job", "-c", "main", "--",
                                             "echo", "from", "the", "plugin")
                assert out.stdout == "from the plugin\n"
                out = await testbed.akubectl("-n", namespace, "exec", "-i", "job", "-c", "main", "--",
                                             "cat", input="piped through\n")
                assert out.stdout == "piped through\n"
                failed = await testbed.akubectl("-n", namespace, "exec", "job", "-c", "main", "--",
                                                "exit", "3", check=False)
                assert failed.returncode == 3, failed.stderr

                # The plugin lost the pod: an error (the apiserver reports our 404 as NotFound),
                # not an empty log.
                backend.pods.pop(uid)
                lost = await testbed.akubectl("-n", namespace, "logs", "job", "-c", "main", check=False)
                assert lost.returncode != 0 and "NotFound" in lost.stderr, lost
            finally:
                await endpoint.close()
    finally:
        await kube.close()
        await testbed.akubectl("delete", "node", node, "--wait=false", "--ignore-not-found", check=False)


# ---- a full agent ---------------------------------------------------------------------------------


async def served_certificate(testbed: Testbed, port: int) -> x509.Certificate | None:
    """The certificate on the node's port if it verifies against the cluster CA for 127.0.0.1."""
    ctx = ssl.create_default_context(cafile=str(testbed.ca_cert))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    except (ssl.SSLError, OSError):
        return None
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def test_a_full_agent_serves_kubectl_logs_and_exec_with_a_self_approved_certificate(
    testbed: Testbed, namespace: str, unique_name: Callable[[str], str], sockets: Path
) -> None:
    node = unique_name("vnode-full")
    backend = FakeBackend()
    plugin = FakePlugin(backend, f"unix://{sockets}/plugin.sock")
    await plugin.start()
    settings = settings_from_mapping(
        {"InterlinkURL": plugin.url, "KubeletPort": 0, "KubeletCertDir": str(sockets / "certs"),
         "KubeletCSRAutoApprove": True, "StatusPeriodSeconds": 0.5, "PingPeriodSeconds": 1},
        nodename=node, env={"KUBECONFIG": str(testbed.kubeconfig), "POD_IP": "127.0.0.1"})
    app = App(settings)
    agent = asyncio.ensure_future(app.run(install_signals=False))
    exit_code: int | None = None
    try:
        ready = await eventually(lambda: _ready_node(testbed, node), f"node {node} Ready")
        port = ready["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        # The agent approved its own CSR: the port now verifies against the cluster CA.
        ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
        cert = await eventually(lambda: served_certificate(testbed, port), "a CA-signed serving certificate")
        assert cert.issuer == ca.subject

        await eventually(lambda: kget(testbed, "serviceaccount", "default", "-n", namespace), "default SA")
        manifest = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job", "namespace": namespace},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [{"name": "main", "image": "busybox"}],
                "restartPolicy": "Never",
            },
        }
        await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
        running = await eventually(lambda: _pod_in_phase(testbed, namespace, "job", "Running"), "pod Running")
        uid = running["metadata"]["uid"]
        backend.append_log(uid, "main", b"first line\n")
        backend.append_log(uid, "setup", b"set up\n")

        assert (await testbed.akubectl("-n", namespace, "logs", "job")).stdout == "first line\n"
        assert (await testbed.akubectl("-n", namespace, "logs", "job", "-c", "setup")).stdout == "set up\n"
        out = await testbed.akubectl("-n", namespace, "exec", "job", "--", "echo", "hello")
        assert out.stdout == "hello\n"

        # -f: a line written later arrives, and the stream ends when the container does.
        follow = await asyncio.create_subprocess_exec(
            str(testbed.kubectl), f"--kubeconfig={testbed.kubeconfig}", "-n", namespace, "logs", "-f", "job",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=testbed.env)
        try:
            assert follow.stdout is not None
            assert await asyncio.wait_for(follow.stdout.readline(), WAIT) == b"first line\n"
            backend.append_log(uid, "main", b"second line\n")
            assert await asyncio.wait_for(follow.stdout.readline(), WAIT) == b"second line\n"
            backend.finish(uid)
            assert await asyncio.wait_for(follow.stdout.read(), WAIT) == b""
            assert await asyncio.wait_for(follow.wait(), WAIT) == 0
        finally:
            if follow.returncode is None:
                follow.kill()
                await follow.wait()
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            exit_code = await asyncio.wait_for(agent, 60)
        await plugin.stop()
        await testbed.akubectl("delete", "node", node, "--wait=false", "--ignore-not-found", check=False)
        await testbed.akubectl("delete", "configmap", "-n", "kube-node-lease", "-l", f"vnode.dev/node={node}",
                               "--ignore-not-found", "--wait=false", check=False)
        csrs = await kget(testbed, "csr")
        for item in (csrs or {}).get("items", []):
            if item["metadata"]["name"].startswith(f"vnode-serving-{node}"):
                await testbed.akubectl("delete", "csr", item["metadata"]["name"], "--wait=false", check=False)
    assert exit_code == 0


async def _ready_node(testbed: Testbed, node: str) -> dict[str, Any] | None:
    obj = await kget(testbed, "node", node)
    if obj is None:
        return None
    ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    return obj if ready and ready[0]["status"] == "True" else None


async def _pod_in_phase(testbed: Testbed, namespace: str, name: str, phase: str) -> dict[str, Any] | None:
    pod = await kget(testbed, "pod", name, "-n", namespace)
    return pod if pod and pod.get("status", {}).get("phase") == phase else None

"""The CSR loop and the opt-in approver against the real apiserver and controller-manager.

The agent runs as a ServiceAccount bound to exactly the ClusterRoles in vnode/kubelet/README.md
(parsed from the README itself), authenticated with a TokenRequest token. The controller-manager's
csrsigning signs what the approver approved; the served certificate must then verify against
the cluster CA for the node's IP, as `kube-apiserver --kubelet-certificate-authority` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from tests.conftest import REPO, Testbed, unique
from tests.fakeplugin import FakeBackend, FakePlugin
from vnode.kube import csr as csr_module
from vnode.kube.client import KubeClient
from vnode.kube.csr import APPROVAL_REASON
from vnode.kube.retry import Backoff
from vnode.kubelet import certs
from vnode.kubelet.cert_manager import CertMode
from vnode.kubelet.endpoint import (
    EndpointOptions,
    KubeletEndpoint,
    start_kubelet_endpoint,
)
from vnode.settings import settings_from_mapping

pytestmark = pytest.mark.integration

README = REPO / "vnode" / "kubelet" / "README.md"
# Only bounds a hang: the controller-manager signs within a second or two of the approval.
WAIT = 120.0
# The shortest lifetime the API accepts: keeps test certificates from outliving the test by much.
LIFETIME = 600


def documented_cluster_role(marker: str) -> dict[str, Any]:
    """The ClusterRole YAML that follows `<!-- rbac:<marker> -->` in the README."""
    match = re.search(rf"<!-- rbac:{marker} -->\s*```yaml\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, f"README has no rbac:{marker} block"
    role: dict[str, Any] = yaml.safe_load(match.group(1))
    assert role["kind"] == "ClusterRole"
    return role


@dataclass
class Agent:
    """Credentials of a ServiceAccount that has exactly the documented RBAC."""

    username: str
    kubeconfig: Path


@pytest.fixture
async def agent_identity(testbed: Testbed, namespace: str, tmp_path: Path) -> AsyncIterator[Agent]:
    sa = "vnode-agent"
    await testbed.akubectl("-n", namespace, "create", "serviceaccount", sa)
    cluster_objects: list[tuple[str, str]] = []
    for marker in ("endpoint", "approver"):
        role = documented_cluster_role(marker)
        role["metadata"]["name"] = unique(role["metadata"]["name"])
        await testbed.akubectl("create", "-f", "-", input=json.dumps(role))
        binding = unique(f"{role['metadata']['name']}-b")
        await testbed.akubectl("create", "clusterrolebinding", binding,
                               f"--clusterrole={role['metadata']['name']}",
                               f"--serviceaccount={namespace}:{sa}")
        cluster_objects += [("clusterrole", role["metadata"]["name"]), ("clusterrolebinding", binding)]
    token = (await testbed.akubectl("-n", namespace, "create", "token", sa, "--duration=1h")).stdout.strip()
    kubeconfig = tmp_path / "agent.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "agent",
        "clusters": [{"name": "testbed", "cluster": {"server": testbed.apiserver_url,
                                                     "certificate-authority": str(testbed.ca_cert)}}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "agent", "context": {"cluster": "testbed", "user": "agent"}}],
    }))
    try:
        yield Agent(f"system:serviceaccount:{namespace}:{sa}", kubeconfig)
    finally:
        for kind, name in cluster_objects:
            await testbed.akubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


@dataclass
class Running:
    node: str
    endpoint: KubeletEndpoint
    kube: KubeClient
    backend: FakeBackend


@pytest.fixture
async def start(testbed: Testbed, agent_identity: Agent, unique_name: Callable[[str], str],
                tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Starts the endpoint in CSR mode as the agent's ServiceAccount; cleans up after the test."""
    stack = contextlib.AsyncExitStack()
    nodes: list[str] = []

    async def run(*, approve: bool = True, node: str | None = None) -> Running:
        node = node or unique_name("vnode-approve")
        nodes.append(node)
        sockets = Path(tempfile.mkdtemp(prefix="kca-", dir="/tmp"))
        stack.callback(shutil.rmtree, sockets, ignore_errors=True)
        backend = FakeBackend()
        kube = await KubeClient.connect(str(agent_identity.kubeconfig))
        stack.push_async_callback(kube.close)
        plugin = await stack.enter_async_context(FakePlugin(backend, f"unix://{sockets}/plugin.sock"))
        client = await stack.enter_async_context(PluginClient(ClientConfig(endpoint=Endpoint.parse(plugin.url))))
        settings = settings_from_mapping({"InterlinkURL": plugin.url, "KubeletPort": 0},
                                         nodename=node, env={"POD_IP": "127.0.0.1"})
        settings = dataclasses.replace(settings, kubelet=dataclasses.replace(settings.kubelet,
                                                                             address="127.0.0.1"))
        options = EndpointOptions(approve_own_csr=approve, cert_dir=tmp_path / node,
                                  csr_expiration_seconds=LIFETIME)
        endpoint = await start_kubelet_endpoint(settings, kube, _NoPods(), client, options)
        stack.push_async_callback(endpoint.close)
        return Running(node, endpoint, kube, backend)

    try:
        yield run
    finally:
        await stack.aclose()
        done = await testbed.akubectl("get", "csr", "-o", "json")
        ours = [c["metadata"]["name"] for c in json.loads(done.stdout)["items"]
                if c["metadata"]["name"].startswith(tuple(f"vnode-serving-{n}" for n in nodes) + tuple(nodes))]
        for name in ours:
            await testbed.akubectl("delete", "csr", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
async def running(start: Callable[..., Awaitable[Running]]) -> Running:
    return await start(approve=True)


class _NoPods:
    def find(self, namespace: str, name: str) -> None:
        return None

    def list_pods(self) -> list[dict[str, Any]]:
        return []


async def until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.1)
    assert value, what
    return value


async def served_certificate(testbed: Testbed, port: int) -> x509.Certificate:
    """Connect as the apiserver would with --kubelet-certificate-authority: the chain must verify
    against the cluster CA and the certificate must name 127.0.0.1."""
    ctx = ssl.create_default_context(cafile=str(testbed.ca_cert))
    ctx.load_cert_chain(str(testbed.kubelet_client_cert), str(testbed.kubelet_client_key))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
        return x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    finally:
        writer.close()


async def csr(testbed: Testbed, name: str) -> dict[str, Any]:
    return json.loads((await testbed.akubectl("get", "csr", name, "-o", "json")).stdout)


async def test_the_agents_own_csr_is_approved_signed_served_and_renewed(
    testbed: Testbed, running: Running, agent_identity: Agent
) -> None:
    manager = running.endpoint.certificates
    assert running.endpoint.mode is CertMode.CSR
    await until(lambda: manager.source == "csr", "the CSR-issued certificate to be served")
    ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
    first = await served_certificate(testbed, running.endpoint.port)
    assert first.issuer == ca.subject
    assert certs.identity_problems(first, certs.ServingIdentity(running.node, ("127.0.0.1",))) == []

    assert running.endpoint.requester is not None
    name = running.endpoint.requester.last_created
    obj = await csr(testbed, name)
    assert obj["spec"]["username"] == agent_identity.username
    assert obj["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
    approved = [c for c in obj["status"]["conditions"] if c["type"] == "Approved"]
    assert [c["reason"] for c in approved] == [APPROVAL_REASON]

    # Renewal: a new key, a new CSR, approved and signed again, and served to new connections.
    manager.renew_now()
    await until(lambda: running.endpoint.requester.last_created != name
                and manager.certificate.serial_number != first.serial_number,  # type: ignore[union-attr]
                "a renewed certificate")
    second = await served_certificate(testbed, running.endpoint.port)
    assert second.serial_number != first.serial_number and second.issuer == ca.subject
    assert second.public_key().public_numbers() != first.public_key().public_numbers()  # type: ignore[union-attr]


async def test_csrs_for_other_nodes_extra_sans_or_other_requesters_are_left_alone(
    testbed: Testbed, running: Running
) -> None:
    approver = running.endpoint.approver
    assert approver is not None
    node = running.node

    async def submit(name: str, identity: certs.ServingIdentity, *, as_admin: bool = False) -> str:
        manifest = certs.csr_manifest(name, certs.build_csr(certs.generate_key(), identity),
                                      expiration_seconds=LIFETIME)
        if as_admin:
            await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
        else:  # the same identity as the agent
            await running.kube.post("/apis/certificates.k8s.io/v1/certificatesigningrequests", manifest)
        return name

    suspicious = [
        await submit(unique(f"{node}-other"), certs.ServingIdentity(unique("someone-else"), ("127.0.0.1",))),
        await submit(unique(f"{node}-ip"), certs.ServingIdentity(node, ("127.0.0.1", "10.0.0.1"))),
        await submit(unique(f"{node}-dns"), certs.ServingIdentity(node, ("127.0.0.1",), ("kubernetes.default",))),
        await submit(unique(f"{node}-admin"), certs.ServingIdentity(node, ("127.0.0.1",)), as_admin=True),
    ]
    # The approver is live: the agent's own CSR gets approved meanwhile (the control).
    await until(lambda: approver.approved, "the agent's own CSR to be approved")
    await until(lambda: all(name in approver.refused for name in suspicious),
                "the approver to consider every submitted CSR")
    reasons = {name: approver.refused[name] for name in suspicious}
    assert any("system:node:someone-else" in p for p in reasons[suspicious[0]])
    assert any("10.0.0.1" in p for p in reasons[suspicious[1]])
    assert any("kubernetes.default" in p for p in reasons[suspicious[2]])
    assert any("not by this agent" in p for p in reasons[suspicious[3]])
    for name in suspicious:
        obj = await csr(testbed, name)
        assert not (obj.get("status") or {}).get("conditions"), obj["status"]
        assert not (obj.get("status") or {}).get("certificate")


async def test_without_the_approver_a_denied_csr_is_replaced_and_a_manual_approval_is_served(
    testbed: Testbed, start: Callable[..., Awaitable[Running]], unique_name: Callable[[str], str],
    agent_identity: Agent, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csr_module, "RECREATE_BACKOFF", Backoff(base=0.2, factor=1.0, cap=0.2))
    node = unique_name("vnode-manual")
    # A pending CSR left behind by an earlier run of this agent: cleaned up at start.
    leftover = f"vnode-serving-{node}-old"
    kube = await KubeClient.connect(str(agent_identity.kubeconfig))
    try:
        await kube.post("/apis/certificates.k8s.io/v1/certificatesigningrequests", certs.csr_manifest(
            leftover, certs.build_csr(certs.generate_key(), certs.ServingIdentity(node, ("127.0.0.1",)))))
    finally:
        await kube.close()
    running = await start(approve=False, node=node)
    requester = running.endpoint.requester
    assert requester is not None and running.endpoint.approver is None
    first = await until(lambda: requester.last_created, "the first CSR")
    assert (await testbed.akubectl("get", "csr", leftover, check=False)).returncode != 0

    await testbed.akubectl("certificate", "deny", first)
    second = await until(lambda: requester.last_created != first and requester.last_created,
                         "a new CSR after the denial")
    assert running.endpoint.certificates.source == "bootstrap"  # still self-signed meanwhile
    await testbed.akubectl("certificate", "approve", second)
    await until(lambda: running.endpoint.certificates.source == "csr", "the approved certificate")
    ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
    assert (await served_certificate(testbed, running.endpoint.port)).issuer == ca.subject

"""kubectl top through the real metrics-server (built from the Go module proxy by hack/metrics-server),
the apiserver's aggregation layer, vnode's kubelet front and the SLURM plugin's usage extension on the
testbed SLURM: a pod that burns CPU and holds memory shows non-zero CPU and memory in `kubectl top pod`
and its node in `kubectl top node`.

This test isolates the kubelet front and the plugin: it registers the Node and the Pod the way
test_kubelet_apiserver does, submits the same pod to the SLURM plugin through plugin_client, and serves
the kubelet front with the plugin-backed usage source the agent's endpoint uses. The same proof with
the whole agent is test_observability_agent_top.py. The kubelet serving certificate is issued by the
cluster CA, which metrics-server verifies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.conftest import Testbed
from tests.integration.test_kubelet_apiserver import direct_get, register_node
from tests.integration.test_slurm_plugin import Plugin
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.integration.test_slurm_usage import plugin  # noqa: F401  (fixture: the plugin with sstat and sampling)
from tests.kubelet_support import StaticLogs, StaticPods, SubprocessExec
from tests.observability_support import MetricsServer
from vnode.kube.client import KubeClient
from vnode.kube.reviews import ApiReviewClient
from vnode.kubelet import certs
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.plugin_backends import PluginUsage
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

pytestmark = pytest.mark.integration

LABEL = "vnode.test/metrics-server"
WAIT = 240.0  # metrics-server needs two scrapes 10 s apart once the APIService is available

# Busy about half the time (so the shared cores are not hogged) and holds 128 MiB.
BURN = ("import time\nb = bytearray(128 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "end = time.time() + 300\nwhile time.time() < end:\n    t = time.time()\n    while time.time() - t < 0.3: pass\n"
        "    time.sleep(0.3)\n")


def cluster_signed_serving_cert(testbed: Testbed, node: str, directory: Path) -> tuple[Path, Path]:
    """A kubelet serving certificate for 127.0.0.1 signed by the testbed CA, as a CSR-issued one is."""
    key = certs.generate_key()
    ca_cert = x509.load_pem_x509_certificate(Path(testbed.ca_cert).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(testbed.ca_key).read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    paths = directory / "kubelet.crt", directory / "kubelet.key"
    certs.write_pair(cert, key, *paths)
    return paths


async def bound_pod(testbed: Testbed, namespace: str, name: str, node: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                "spec": {"nodeName": node, "containers": containers, "restartPolicy": "Never",
                         "tolerations": [{"operator": "Exists"}]}}
    await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
    out = await testbed.akubectl("-n", namespace, "get", "pod", name, "-o", "json")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def mark_running(testbed: Testbed, pod: dict[str, Any], started: str) -> dict[str, Any]:
    meta = pod["metadata"]
    status = {"status": {"phase": "Running", "startTime": started, "conditions": [{"type": "Ready", "status": "True"}],
                         "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0, "image": c["image"], "imageID": "",
                                                "state": {"running": {"startedAt": started}}} for c in pod["spec"]["containers"]]}}
    await testbed.akubectl("-n", meta["namespace"], "patch", "pod", meta["name"], "--subresource=status", "--type=merge",
                           "-p", json.dumps(status))
    out = await testbed.akubectl("-n", meta["namespace"], "get", "pod", meta["name"], "-o", "json")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def until(probe: Any, what: str, timeout: float = WAIT) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        ok, last = await probe()
        if ok:
            return last
        await asyncio.sleep(3.0)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


@pytest.fixture
async def node_front(testbed: Testbed, plugin: Plugin, unique_name: Any, tmp_path: Path) -> AsyncIterator[tuple[str, StaticPods, KubeletServer]]:  # noqa: F811
    node = unique_name("vnode-top")
    cert, key = cluster_signed_serving_cert(testbed, node, tmp_path)
    client = await KubeClient.connect(str(testbed.kubeconfig))
    pods = StaticPods()
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host="127.0.0.1", port=0),
        tls=ServingTLS(cert, key, testbed.ca_cert),
        authority=RequestAuthority(ApiReviewClient(client), node),
        pods=pods, logs=StaticLogs(b""), execs=SubprocessExec(), usage=PluginUsage(pods, plugin.c),
    )
    try:
        async with server:
            await register_node(testbed, node, server.port)
            await testbed.akubectl("label", "node", node, f"{LABEL}={node}")
            yield node, pods, server
    finally:
        await testbed.akubectl("delete", "node", node, "--wait=false", check=False)
        await client.close()


async def test_kubectl_top_shows_cpu_and_memory_of_a_pod_burning_on_slurm(
    testbed: Testbed, plugin: Plugin, node_front: tuple[str, StaticPods, KubeletServer], namespace: str, tmp_path: Path,  # noqa: F811
) -> None:
    node, pods, server = node_front
    pod = await bound_pod(testbed, namespace, "burner", node,
                          [{"name": "burn", "image": "python:3.11", "command": ["python3", "-c", BURN]}])
    await plugin.create(pod)  # the SLURM job of exactly this pod (same uid), as the agent would submit it
    await plugin.wait_for(pod, lambda s: bool(s.containers) and s.containers[0].state.running is not None, "the job to run")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pods.pods.append(await mark_running(testbed, pod, started))

    # Without credentials the usage paths are refused like every kubelet path.
    assert (await direct_get(server.port, "/metrics/resource"))[0] == 401
    assert (await direct_get(server.port, "/stats/summary"))[0] == 401

    metrics_server = MetricsServer(testbed, tmp_path / "ms", f"{LABEL}={node}")
    try:
        await metrics_server.start()

        async def top_pod() -> tuple[bool, str]:
            out = await testbed.akubectl("-n", namespace, "top", "pod", "burner", "--no-headers", check=False)
            match = re.match(r"burner\s+(\d+)m\s+(\d+)Mi", out.stdout.strip())
            return bool(match and int(match.group(1)) > 0 and int(match.group(2)) >= 128), out.stdout + out.stderr

        line = await until(top_pod, "kubectl top pod to show the burner's CPU and memory")
        print(f"\nkubectl top pod: {line.strip()}")

        async def top_containers() -> tuple[bool, str]:
            out = await testbed.akubectl("-n", namespace, "top", "pod", "burner", "--containers", "--no-headers", check=False)
            return bool(re.search(r"burner\s+burn\s+[1-9]\d*m\s+\d+Mi", out.stdout)), out.stdout + out.stderr

        await until(top_containers, "kubectl top pod --containers to show the burn container")

        async def top_node() -> tuple[bool, str]:
            out = await testbed.akubectl("top", "node", node, "--no-headers", check=False)
            # CPU% and MEMORY% only appear when the node reports capacity (this test node does not).
            match = re.match(rf"{re.escape(node)}\s+(\d+)m\s+(?:\S+%\s+)?(\d+)Mi", out.stdout.strip())
            return bool(match and int(match.group(1)) > 0 and int(match.group(2)) >= 128), out.stdout + out.stderr

        line = await until(top_node, "kubectl top node to show the node's CPU and memory")
        print(f"kubectl top node: {line.strip()}")

        # The apiserver's node proxy refuses loopback node addresses, so /stats/summary is read
        # directly, as the apiserver identity (its kubelet client certificate, allowed nodes/stats).
        status, body = await direct_get(server.port, "/stats/summary", cert=(testbed.kubelet_client_cert, testbed.kubelet_client_key))
        assert status == 200, body
        summary = json.loads(body)
        assert summary["node"]["nodeName"] == node
        assert summary["pods"][0]["podRef"]["name"] == "burner"
        assert summary["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"] > 0
    except BaseException:
        print(f"metrics-server log:\n{metrics_server.tail()}")
        raise
    finally:
        await metrics_server.stop()

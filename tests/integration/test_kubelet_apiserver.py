"""kubectl logs / kubectl exec through the real kube-apiserver to vnode's kubelet front.

Each test registers its own Node (InternalIP 127.0.0.1, kubelet port = our ephemeral port)
and a Pod bound to it, serves the kubelet endpoints with a self-signed serving certificate
from vnode.kubelet.certs, trusts the testbed CA for client certificates, and checks callers
with real TokenReview/SubjectAccessReview calls. The apiserver reaches us with its
kubelet-client certificate (RBAC: system:kubelet-api-admin, bound by the testbed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.kubelet_support import StaticLogs, StaticPods, SubprocessExec
from vnode.kube.client import KubeClient
from vnode.kube.reviews import ApiReviewClient
from vnode.kubelet import certs
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

pytestmark = pytest.mark.integration

LOG_TEXT = b"".join(b"line %d\n" % i for i in range(1, 11))


@dataclass
class Cluster:
    testbed: object
    namespace: str
    node: str
    pod: str
    server: KubeletServer
    logs: StaticLogs
    execs: SubprocessExec
    pods: StaticPods

    async def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return await self.testbed.akubectl("-n", self.namespace, *args, input=input, check=check)  # type: ignore[attr-defined]


async def register_node(testbed, node: str, port: int) -> None:
    manifest = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"type": "virtual-kubelet"}},
                "spec": {"taints": [{"key": "virtual-node.test/only", "effect": "NoSchedule"}]}}
    await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
    status = {"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}],
    }}
    await testbed.akubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(status))


async def create_pod(testbed, namespace: str, name: str, node: str) -> dict:
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "main", "image": "busybox"}, {"name": "side", "image": "busybox"}],
            # The test node never renews a Lease; keep the pod from being evicted meanwhile.
            "tolerations": [{"operator": "Exists"}],
        },
    }
    await testbed.akubectl("create", "-f", "-", input=json.dumps(manifest))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                          "containerStatuses": [
                              {"name": c, "ready": True, "restartCount": 0, "image": "busybox", "imageID": "",
                               "state": {"running": {"startedAt": now}}} for c in ("main", "side")]}}
    await testbed.akubectl("-n", namespace, "patch", "pod", name, "--subresource=status", "--type=merge",
                           "-p", json.dumps(running))
    out = await testbed.akubectl("-n", namespace, "get", "pod", name, "-o", "json")
    return json.loads(out.stdout)


@pytest.fixture
async def cluster(testbed, namespace, unique_name, tmp_path) -> AsyncIterator[Cluster]:
    node = unique_name("vnode-kubelet")
    key = certs.generate_key()
    cert = certs.self_signed(key, certs.ServingIdentity(node, ("127.0.0.1",)))
    certs.write_pair(cert, key, tmp_path / "serving.crt", tmp_path / "serving.key")
    client = await KubeClient.connect(str(testbed.kubeconfig))
    logs = StaticLogs(LOG_TEXT, follow_lines=[b"later 1\n", b"later 2\n"], follow_interval=0.3)
    execs = SubprocessExec()
    pods = StaticPods()
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host="127.0.0.1", port=0),
        tls=ServingTLS(tmp_path / "serving.crt", tmp_path / "serving.key", testbed.ca_cert),
        authority=RequestAuthority(ApiReviewClient(client), node),
        pods=pods, logs=logs, execs=execs,
    )
    try:
        async with server:
            await register_node(testbed, node, server.port)
            pods.pods.append(await create_pod(testbed, namespace, "web", node))
            yield Cluster(testbed, namespace, node, "web", server, logs, execs, pods)
    finally:
        await testbed.akubectl("delete", "node", node, "--wait=false", check=False)
        await client.close()


# ---- kubectl logs ---------------------------------------------------------------------------


async def test_kubectl_logs_reaches_the_logs_source(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "web", "-c", "main")
    assert out.stdout.encode() == LOG_TEXT
    namespace, pod, container, options = cluster.logs.calls[-1]
    assert (namespace, pod, container) == (cluster.namespace, "web", "main")
    assert not options.follow


async def test_kubectl_logs_flags_arrive_as_log_options(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "web", "-c", "side", "--tail=3", "--timestamps", "--since=1h")
    assert out.stdout.encode() == b"line 8\nline 9\nline 10\n"
    options = cluster.logs.calls[-1][3]
    assert (options.tail_lines, options.timestamps, options.since_seconds) == (3, True, 3600)
    await cluster.kubectl("logs", "web", "-c", "main", "--since-time=2026-01-02T03:04:05Z")
    assert cluster.logs.calls[-1][3].since_time == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_kubectl_logs_all_containers_includes_init_containers(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "web", "--all-containers", "--prefix")
    lines = out.stdout.splitlines()
    assert len(lines) == 30
    assert {line.split("]", 1)[0] for line in lines} == {
        "[pod/web/init", "[pod/web/main", "[pod/web/side"}
    # kubectl keeps its requests in a Go map, so it asks for the containers in no fixed order: each once.
    assert sorted(c[2] for c in cluster.logs.calls[-3:]) == ["init", "main", "side"]


async def test_kubectl_logs_limit_bytes_is_enforced(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "web", "-c", "main", "--limit-bytes=10")
    assert out.stdout.encode() == LOG_TEXT[:10]


async def test_kubectl_logs_follow_streams_until_the_source_ends(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "-f", "web", "-c", "main")
    assert out.stdout.encode() == LOG_TEXT + b"later 1\nlater 2\n"
    assert cluster.logs.calls[-1][3].follow


async def test_kubectl_logs_for_an_unknown_container_on_our_side_is_404(cluster: Cluster) -> None:
    # The apiserver knows the pod; our pod cache does not (e.g. not synced yet).
    cluster.pods.pods.clear()
    out = await cluster.kubectl("logs", "web", "-c", "main", check=False)
    assert out.returncode != 0
    assert "NotFound" in out.stderr or "could not find" in out.stderr or "not found" in out.stderr


# ---- kubectl exec ---------------------------------------------------------------------------


async def test_kubectl_exec_prints_stdout(cluster: Cluster) -> None:
    out = await cluster.kubectl("exec", "web", "-c", "main", "--", "echo", "hello from vnode")
    assert out.stdout == "hello from vnode\n"
    spec = cluster.execs.specs[-1]
    assert (spec.pod, spec.container, spec.command) == ("web", "main", ("echo", "hello from vnode"))


async def test_kubectl_exec_pipes_stdin(cluster: Cluster) -> None:
    out = await cluster.kubectl("exec", "-i", "web", "-c", "main", "--", "cat", input="data\nmore data\n")
    assert out.stdout == "data\nmore data\n"


async def test_kubectl_exec_returns_the_exit_code(cluster: Cluster) -> None:
    out = await cluster.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "echo partial; exit 3", check=False)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "partial\n"


async def test_kubectl_exec_keeps_stderr_separate(cluster: Cluster) -> None:
    out = await cluster.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", "echo o; echo e >&2")
    assert (out.stdout, out.stderr) == ("o\n", "e\n")


async def test_kubectl_exec_with_a_tty(cluster: Cluster, testbed) -> None:
    script = shutil.which("script")
    assert script, "util-linux `script` is needed to give kubectl a terminal"
    command = (
        f"{testbed.kubectl} --kubeconfig={testbed.kubeconfig} -n {cluster.namespace} exec -it web -c main "
        "-- sh -c 'test -t 0 && echo tty-yes; stty size'"
    )
    out = await testbed.arun([script, "-qec", command, "/dev/null"])
    assert "tty-yes" in out.stdout
    assert cluster.execs.specs[-1].tty


async def test_kubectl_exec_ten_megabytes_intact(cluster: Cluster, tmp_path: Path, testbed) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10 * 1024 * 1024))
    proc = await asyncio.create_subprocess_exec(
        str(testbed.kubectl), f"--kubeconfig={testbed.kubeconfig}", "-n", cluster.namespace,
        "exec", "web", "-c", "main", "--", "cat", str(blob),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err
    assert out == blob.read_bytes()


# ---- who may call ---------------------------------------------------------------------------


async def direct_get(port: int, path: str, *, token: str | None = None,
                     cert: tuple[Path, Path] | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert; we test the server's checks
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    if not data:
        return 0, b""  # the server hung up without answering (e.g. a refused certificate)
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def test_anonymous_callers_get_401(cluster: Cluster) -> None:
    status, _ = await direct_get(cluster.server.port, f"/containerLogs/{cluster.namespace}/web/main")
    assert status == 401


async def test_a_valid_token_without_rbac_gets_403_with_the_reason(cluster: Cluster) -> None:
    await cluster.kubectl("create", "serviceaccount", "nobody")
    token = (await cluster.kubectl("create", "token", "nobody")).stdout.strip()
    status, body = await direct_get(cluster.server.port, f"/containerLogs/{cluster.namespace}/web/main", token=token)
    assert status == 403
    assert f"user=system:serviceaccount:{cluster.namespace}:nobody".encode() in body
    assert b"subresource=proxy" in body


async def test_a_bogus_token_gets_401(cluster: Cluster) -> None:
    status, _ = await direct_get(cluster.server.port, "/pods", token="not-a-real-token")
    assert status == 401


async def test_the_apiserver_identity_may_read_pods_and_healthz_directly(cluster: Cluster, testbed) -> None:
    cert = (testbed.kubelet_client_cert, testbed.kubelet_client_key)
    status, body = await direct_get(cluster.server.port, "/pods", cert=cert)
    assert status == 200
    assert [p["metadata"]["name"] for p in json.loads(body)["items"]] == ["web"]
    assert (await direct_get(cluster.server.port, "/healthz", cert=cert))[0] == 200


async def test_client_certificates_from_another_ca_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert(common_name="kube-apiserver-kubelet-client", organization_name="system:masters")
    cert, key = tmp_path / "evil.crt", tmp_path / "evil.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    # TLS 1.3: the server checks the client certificate after the client thinks the handshake
    # is done, so the refusal shows as an alert on our first read or as a bare hang-up.
    try:
        status, _ = await direct_get(cluster.server.port, "/pods", cert=(cert, key))
    except (ssl.SSLError, ConnectionError):
        status = 0
    assert status == 0


async def test_measure_kubectl_exec_throughput_through_the_apiserver(cluster: Cluster, testbed, capsys) -> None:
    """Prints MB/s for 100 MiB of stdout: kubectl (WebSocket) → apiserver (translated to SPDY)
    → vnode. Only the byte count is asserted, never the speed."""
    size = 100 * 1024 * 1024
    start = asyncio.get_running_loop().time()
    proc = await asyncio.create_subprocess_exec(
        str(testbed.kubectl), f"--kubeconfig={testbed.kubeconfig}", "-n", cluster.namespace,
        "exec", "web", "-c", "main", "--", "head", "-c", str(size), "/dev/zero",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    elapsed = asyncio.get_running_loop().time() - start
    assert proc.returncode == 0, err
    assert len(out) == size
    with capsys.disabled():
        print(f"\nkubectl exec via apiserver: {size / elapsed / 1e6:.1f} MB/s ({elapsed:.2f} s for 100 MiB)")

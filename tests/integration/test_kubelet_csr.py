"""The CSR path: a serving certificate requested from kubernetes.io/kubelet-serving.

vnode.kubelet.certs builds the key, CSR and CertificateSigningRequest object; the test plays
the approver (the agent's opt-in approver is the agent's) and the testbed's real
controller-manager signs. The issued certificate must then satisfy a client that verifies the
kubelet like `kube-apiserver --kubelet-certificate-authority=<cluster CA>` does: client-go's
TLS stack with the cluster CA and the node's IP.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from cryptography import x509

from tests.gobuild import go_binary
from tests.kubelet_support import (
    InMemoryReviews,
    StaticLogs,
    StaticPods,
    SubprocessExec,
    make_pod,
)
from vnode.kubelet import certs
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

pytestmark = pytest.mark.integration


async def request_serving_certificate(testbed, node: str, tmp_path: Path) -> tuple[Path, Path]:
    key = certs.generate_key()
    identity = certs.ServingIdentity(node, ("127.0.0.1",))
    pem = certs.build_csr(key, identity)
    assert certs.serving_csr_problems(pem, node, ["127.0.0.1"]) == []
    name = f"{node}-serving"
    await testbed.akubectl("create", "-f", "-", input=json.dumps(certs.csr_manifest(name, pem, expiration_seconds=3600)))
    await testbed.akubectl("certificate", "approve", name)
    issued = b""
    for _ in range(120):  # the controller-manager signs within a second or two; bound a hang
        out = await testbed.akubectl("get", "csr", name, "-o", "jsonpath={.status.certificate}")
        if out.stdout.strip():
            issued = base64.b64decode(out.stdout.strip())
            break
        await asyncio.sleep(0.5)
    assert issued, f"CSR {name} was approved but never signed"
    await testbed.akubectl("delete", "csr", name, "--wait=false", check=False)
    cert_path, key_path = tmp_path / "kubelet.crt", tmp_path / "kubelet.key"
    certs.write_pair(issued, key, cert_path, key_path)
    return cert_path, key_path


async def test_csr_yields_a_certificate_a_verifying_apiserver_accepts(testbed, unique_name, tmp_path: Path) -> None:
    node = unique_name("vnode-csr")
    cert_path, key_path = await request_serving_certificate(testbed, node, tmp_path)
    cert, _ = certs.load_pair(cert_path, key_path)
    ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
    assert cert.issuer == ca.subject
    assert cert.subject.rfc4514_string() in (f"CN=system:node:{node},O=system:nodes",
                                              f"O=system:nodes,CN=system:node:{node}")
    assert certs.renewal_time(cert) < cert.not_valid_after_utc

    reviews = InMemoryReviews(grants={testbed.kubelet_client_user: {("*", "*")}})
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host="127.0.0.1", port=0),
        tls=ServingTLS(cert_path, key_path, testbed.ca_cert),
        authority=RequestAuthority(reviews, node),
        pods=StaticPods([make_pod("ns", "p", node=node)]),
        logs=StaticLogs(),
        execs=SubprocessExec(),
    )
    client = go_binary("spdyclient")
    async with server:
        url = f"https://127.0.0.1:{server.port}/exec/ns/p/main?command=echo&command=verified&output=1"
        proc = await asyncio.create_subprocess_exec(
            str(client), "-url", url, "-ca", str(testbed.ca_cert),
            "-cert", str(testbed.kubelet_client_cert), "-key", str(testbed.kubelet_client_key),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    # client-go verified our chain to the cluster CA and the IP SAN 127.0.0.1.
    assert (proc.returncode, out) == (0, b"verified\n"), err
    assert reviews.sar_calls[0][0] == testbed.kubelet_client_user


async def test_self_signed_certificate_fails_a_verifying_client(testbed, unique_name, tmp_path: Path) -> None:
    """The control: without the CSR path, a verifying apiserver would refuse us."""
    node = unique_name("vnode-selfsigned")
    key = certs.generate_key()
    certs.write_pair(certs.self_signed(key, certs.ServingIdentity(node, ("127.0.0.1",))), key,
                     tmp_path / "s.crt", tmp_path / "s.key")
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host="127.0.0.1", port=0),
        tls=ServingTLS(tmp_path / "s.crt", tmp_path / "s.key", testbed.ca_cert),
        authority=RequestAuthority(InMemoryReviews(grants={testbed.kubelet_client_user: {("*", "*")}}), node),
        pods=StaticPods([make_pod("ns", "p", node=node)]), logs=StaticLogs(), execs=SubprocessExec(),
    )
    async with server:
        url = f"https://127.0.0.1:{server.port}/exec/ns/p/main?command=true&output=1"
        proc = await asyncio.create_subprocess_exec(
            str(go_binary("spdyclient")), "-url", url, "-ca", str(testbed.ca_cert),
            "-cert", str(testbed.kubelet_client_cert), "-key", str(testbed.kubelet_client_key),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 125
    assert b"certificate" in err

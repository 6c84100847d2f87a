"""Smoke tests proving the testbed's Kubernetes control plane is the real thing.

Each test talks to the real kube-apiserver (through the real kubectl) and relies on the real
controller-manager and scheduler doing their jobs.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import REPO, Testbed

pytestmark = pytest.mark.integration


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_apiserver_readyz_is_ok_over_tls_with_the_admin_client_cert(testbed: Testbed) -> None:
    ctx = ssl.create_default_context(cafile=str(testbed.ca_cert))  # verifies the serving cert against our CA
    ctx.load_cert_chain(str(testbed.pki_dir / "admin.crt"), str(testbed.pki_dir / "admin.key"))
    with urllib.request.urlopen(f"{testbed.apiserver_url}/readyz", context=ctx, timeout=30) as r:
        assert r.status == 200
        assert r.read() == b"ok"
    assert testbed.kubectl_run("get", "--raw", "/readyz").stdout == "ok"


def test_apiserver_and_kubectl_report_the_pinned_release(testbed: Testbed) -> None:
    version = json.loads(testbed.kubectl_run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{testbed.k8s_version}"
    assert version["clientVersion"]["gitVersion"] == f"v{testbed.k8s_version}"


def test_apiserver_listens_on_loopback_only(testbed: Testbed) -> None:
    listeners = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line.split()[3] for line in listeners if line.split()[3].endswith(":6443")]
    assert ours == ["127.0.0.1:6443"]


def test_testbed_status_reports_every_component_ready(testbed: Testbed) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "hack" / "testbed"), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    status = json.loads(out.stdout)
    states = {c["component"]: c["state"] for c in status["components"]}
    assert states == {name: "ready" for name in states}
    assert {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "slurmctld",
        "slurmd",
        "slurmdbd",
    } <= set(states)
    assert out.returncode == 0


def test_rbac_denies_an_unprivileged_service_account_token(testbed: Testbed, namespace: str) -> None:
    testbed.kubectl_run("create", "serviceaccount", "nobody", "-n", namespace)
    token = testbed.kubectl_run("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    as_sa: list[str | Path] = [
        testbed.kubectl,
        f"--server={testbed.apiserver_url}",
        f"--certificate-authority={testbed.ca_cert}",
        f"--token={token}",
        "--kubeconfig=/dev/null",
    ]
    # The token is valid (TokenRequest + SA signing key work): the apiserver knows who is asking ...
    whoami = json.loads(testbed.run([*as_sa, "auth", "whoami", "-o", "json"]).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"
    # ... and RBAC refuses what it was never granted.
    for verb_args in (["get", "pods", "-n", namespace], ["get", "nodes"], ["get", "secrets", "-n", namespace]):
        denied = testbed.run([*as_sa, *verb_args], check=False)
        assert denied.returncode != 0
        assert "forbidden" in denied.stderr.lower(), denied.stderr
        assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr


def test_kubelet_client_identity_is_bound_to_kubelet_api_admin(testbed: Testbed) -> None:
    ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(testbed.kubelet_client_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == testbed.kubelet_client_user
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    def can_i(*args: str) -> str:
        return testbed.kubectl_run(
            "auth", "can-i", *args, f"--as={testbed.kubelet_client_user}", check=False
        ).stdout.strip()

    # What the apiserver does to a kubelet: logs (get nodes/proxy), exec/attach/port-forward (create).
    assert can_i("get", "nodes", "--subresource=proxy") == "yes"
    assert can_i("create", "nodes", "--subresource=proxy") == "yes"
    assert can_i("get", "nodes", "--subresource=log") == "yes"
    assert can_i("get", "nodes", "--subresource=stats") == "yes"
    # ... and nothing beyond the kubelet API.
    assert can_i("create", "pods", "-n", "default") == "no"
    assert can_i("get", "secrets", "-A") == "no"


@pytest.fixture
def fake_node(testbed: Testbed, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A Node object with a Ready status written by the test (no kubelet behind it), tainted like a
    virtual node so only pods that tolerate it may land there."""
    name = unique_name("vnode-smoke")
    testbed.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"type": "virtual-kubelet", "vnode.test/node": name}},
            "spec": {
                "taints": [{"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]
            },
        }
    )
    status = {
        "status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fake status from a test",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }
    }
    testbed.kubectl_run("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    yield name
    testbed.kubectl_run("delete", "node", name, "--wait=false", "--ignore-not-found", check=False)


def _pod(name: str, node: str, tolerate: bool) -> dict:
    spec: dict = {
        "nodeSelector": {"vnode.test/node": node},
        "containers": [{"name": "main", "image": "docker://busybox:1.36", "command": ["sleep", "1"]}],
    }
    if tolerate:
        spec["tolerations"] = [
            {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_scheduler_binds_pod_to_tainted_node_through_nodeselector_and_toleration(
    testbed: Testbed, namespace: str, fake_node: str
) -> None:
    testbed.kubectl_run(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(_pod("tolerates", fake_node, tolerate=True))
    )
    testbed.kubectl_run(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(_pod("intolerant", fake_node, tolerate=False))
    )

    def bound_node() -> str | None:
        return testbed.kubectl_json("get", "pod", "tolerates", "-n", namespace)["spec"].get("nodeName")

    assert testbed.wait_until(bound_node, "the scheduler to bind the tolerating pod") == fake_node

    def unschedulable() -> dict | None:
        pod = testbed.kubectl_json("get", "pod", "intolerant", "-n", namespace)
        conds = {c["type"]: c for c in pod["status"].get("conditions", [])}
        cond = conds.get("PodScheduled")
        return cond if cond and cond["status"] == "False" else None

    cond = testbed.wait_until(unschedulable, "the scheduler to reject the pod without toleration")
    assert cond["reason"] == "Unschedulable"
    assert "untolerated taint" in cond["message"]
    assert testbed.kubectl_json("get", "pod", "intolerant", "-n", namespace)["spec"].get("nodeName") is None
    testbed.kubectl_run("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0", check=False)


def test_approved_kubelet_serving_csr_is_signed_by_the_cluster_ca(
    testbed: Testbed, unique_name: Callable[[str], str]
) -> None:
    node = unique_name("csr-node")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(node),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    name = unique_name("kubelet-serving")
    testbed.apply(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                "signerName": "kubernetes.io/kubelet-serving",
                "usages": ["digital signature", "server auth"],
            },
        }
    )
    try:
        assert "certificate" not in testbed.kubectl_json("get", "csr", name).get(
            "status", {}
        )  # nothing before approval
        testbed.kubectl_run("certificate", "approve", name)

        def issued() -> str | None:
            return testbed.kubectl_json("get", "csr", name).get("status", {}).get("certificate")

        pem = base64.b64decode(testbed.wait_until(issued, "csrsigning to sign the approved CSR"))
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(testbed.ca_cert.read_bytes())
        cert.verify_directly_issued_by(ca)  # chains to the testbed CA
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)  # our key was certified
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{node}"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
        assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    finally:
        testbed.kubectl_run("delete", "csr", name, "--ignore-not-found", check=False)


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(testbed: Testbed, namespace: str) -> None:
    testbed.kubectl_run("create", "configmap", "owner", "-n", namespace)
    owner_uid = testbed.kubectl_json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    testbed.kubectl_run(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "dependent",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
                },
            }
        ),
    )
    testbed.kubectl_run("delete", "configmap", "owner", "-n", namespace, "--cascade=background")

    def dependent_gone() -> bool:
        return testbed.kubectl_run("get", "configmap", "dependent", "-n", namespace, check=False).returncode != 0

    testbed.wait_until(dependent_gone, "the garbage collector to delete the dependent ConfigMap")


def test_node_lifecycle_controller_marks_a_silent_node_not_ready(testbed: Testbed, fake_node: str) -> None:
    # fake_node reported Ready once and then never again (no lease, no heartbeat): after
    # --node-monitor-grace-period the node-lifecycle controller must take Ready to Unknown and taint it.
    def unknown_and_tainted() -> bool:
        node = testbed.kubectl_json("get", "node", fake_node)
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
        taints = {t["key"] for t in node["spec"].get("taints", [])}
        return ready == "Unknown" and "node.kubernetes.io/unreachable" in taints

    testbed.wait_until(
        unknown_and_tainted, "the node-lifecycle controller to mark the silent node Unknown", timeout=180
    )


def test_env_output_gives_a_plain_shell_kubectl_the_stand_in_and_slurm(testbed: Testbed) -> None:
    # What the README tells users to run: eval "$(hack/testbed env)" in a shell that has none of it.
    script = f'eval "$({sys.executable} {REPO / "hack" / "testbed"} env)" && kubectl get namespace default -o name ' \
             '&& command -v singularity && sinfo -h -o %P'
    done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "namespace/default"
    assert lines[1] == str(REPO / "hack" / "bin" / "singularity")
    assert lines[2].strip()  # the SLURM partition, e.g. "debug*"

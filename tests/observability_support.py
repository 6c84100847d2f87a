"""metrics-server on the testbed, as a local process behind the apiserver's aggregation layer.

The testbed has no pod network and no kube-proxy, so metrics-server cannot run as a pod behind a
ClusterIP. What works instead (see hack/metrics-server/README.md):

* the APIService `v1beta1.metrics.k8s.io` names a Service of type **ExternalName** (`localhost`): the
  aggregator resolves an ExternalName service to `https://<externalName>:<APIService port>`
  (k8s.io/apiserver pkg/util/proxy ResolveCluster), so it dials metrics-server on loopback. A
  selector-less Service with a manual EndpointSlice would need a non-loopback address: Endpoints
  validation rejects 127.0.0.0/8;
* metrics-server serves a certificate for `<service>.<namespace>.svc` (the name the aggregator
  verifies) from a throwaway CA that is the APIService's caBundle;
* it authenticates as its own ServiceAccount (token in a kubeconfig) with the RBAC of its upstream
  manifests, uses the same token towards kubelets (the node agent checks it with TokenReview and a
  `nodes/metrics` SubjectAccessReview), and verifies kubelet serving certificates against the cluster
  CA (`--kubelet-certificate-authority`), with InternalIP and the node's status port;
* `--node-selector` keeps it to the test's nodes (other tests register nodes that serve nothing).

The APIService is cluster-wide: one metrics-server at a time per testbed. It is deleted at stop, so
an idle testbed does not advertise an unavailable metrics.k8s.io to every kubectl.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "hack" / "metrics-server" / "build"
NAME = "vnode-metrics-server"
NAMESPACE = "kube-system"
APISERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION = "10s"  # metrics-server's minimum: two scrapes give a rate within ~20 s
REQUEST_TIMEOUT = "5s"  # must be below the resolution; a local kubelet front answers in milliseconds


def build_metrics_server() -> Path:
    """hack/metrics-server/build (cached after the first build); raises with its output on failure."""
    proc = subprocess.run([sys.executable, str(BUILD)], capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/metrics-server/build failed: {proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def rbac_manifests() -> list[dict[str, object]]:
    """What metrics-server's own manifests grant it, under vnode test names."""
    sa = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}, "subjects": [sa]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{NAME}:auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}, "subjects": [sa]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{NAME}-auth-reader", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"},
         "subjects": [sa]},
    ]


def service_manifests(port: int, ca_pem: bytes) -> list[dict[str, object]]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
         "spec": {"service": {"name": NAME, "namespace": NAMESPACE, "port": port}, "group": "metrics.k8s.io",
                  "version": "v1beta1", "caBundle": base64.b64encode(ca_pem).decode(),
                  "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MetricsServer:
    testbed: object
    workdir: Path
    node_selector: str
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    args: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.workdir / "metrics-server.log"

    async def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return await self.testbed.akubectl(*args, input=input, check=check)  # type: ignore[attr-defined]

    async def start(self) -> None:
        binary = await asyncio.to_thread(build_metrics_server)  # minutes when cold, on purpose off the loop
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        ca = trustme.CA()
        leaf = ca.issue_cert(f"{NAME}.{NAMESPACE}.svc", "localhost", "127.0.0.1")
        cert, key = self.workdir / "serving.crt", self.workdir / "serving.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        await self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac_manifests()}))
        token = (await self.kubectl("-n", NAMESPACE, "create", "token", NAME, "--duration=2h")).stdout.strip()
        kubeconfig = self.workdir / "metrics-server.kubeconfig"
        ca_data = base64.b64encode(Path(self.testbed.ca_cert).read_bytes()).decode()  # type: ignore[attr-defined]
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "ms",
            "clusters": [{"name": "testbed", "cluster": {"server": self.testbed.apiserver_url,  # type: ignore[attr-defined]
                                                           "certificate-authority-data": ca_data}}],
            "users": [{"name": NAME, "user": {"token": token}}],
            "contexts": [{"name": "ms", "context": {"cluster": "testbed", "user": NAME}}]}))
        self.args = [
            str(binary), f"--secure-port={self.port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}",
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            f"--kubelet-certificate-authority={self.testbed.ca_cert}",  # type: ignore[attr-defined]
            f"--metric-resolution={RESOLUTION}", f"--kubelet-request-timeout={REQUEST_TIMEOUT}",
            f"--node-selector={self.node_selector}", "-v=2",
        ]
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=log_fd, stderr=asyncio.subprocess.STDOUT,
                                                             stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(log_fd)
        await self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": service_manifests(self.port, ca.cert_pem.bytes())}))
        await self.wait_available()

    async def wait_available(self, timeout: float = 120.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        last = ""
        while asyncio.get_running_loop().time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"metrics-server exited {self.proc.returncode}: {self.tail()}")
            out = await self.kubectl("get", "apiservice", APISERVICE, "-o", "json", check=False)
            if out.returncode == 0:
                conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
                available = next((c for c in conditions if c.get("type") == "Available"), {})
                if available.get("status") == "True":
                    return
                last = f"{available.get('reason')}: {available.get('message')}"
            await asyncio.sleep(1.0)
        raise RuntimeError(f"APIService {APISERVICE} not Available after {timeout:g}s ({last}); log: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        await self.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false", check=False)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None

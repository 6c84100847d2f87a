"""metrics-server on the testbed, as a local process behind the apiserver's aggregation layer (README.md
beside this file says why it is wired this way). The manifests, flags and certificates live here;
tests/observability_support.py (async, per test) and `hack/metrics-server/run` (by hand, the demo) both
use them.

    hack/metrics-server/run start [--node-selector k=v]   # build if needed, register, start; prints the pid
    hack/metrics-server/run status                        # the APIService's Available condition
    hack/metrics-server/run stop                          # stop our process by pid, remove the APIService

KUBECONFIG (an admin kubeconfig, e.g. from `eval "$(hack/testbed env)"`) and kubectl on PATH are used.
The testbed's CA (`pki/ca.crt` next to the kubeconfig's cluster, or VNODE_CLUSTER_CA) verifies kubelets.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAME = "vnode-metrics-server"
NAMESPACE = "kube-system"
APISERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION = "10s"  # metrics-server's minimum: two scrapes give a rate within ~20 s
REQUEST_TIMEOUT = "5s"  # must be below the resolution; a local kubelet front answers in milliseconds
STATE_DIR = Path(os.environ.get("VNODE_METRICS_SERVER_STATE", "/tmp/vnode-metrics-server"))


def rbac_manifests() -> list[dict[str, Any]]:
    """What metrics-server's own manifests grant it, under vnode's names."""
    sa = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": NAME},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
         "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": NAME}, "subjects": [sa]},
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{NAME}:auth-delegator"},
         "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "system:auth-delegator"}, "subjects": [sa]},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": {"name": f"{NAME}-auth-reader", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "extension-apiserver-authentication-reader"}, "subjects": [sa]},
    ]


def service_manifests(port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """The ExternalName Service (`localhost`) and the APIService that routes metrics.k8s.io to it."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
         "spec": {"service": {"name": NAME, "namespace": NAMESPACE, "port": port}, "group": "metrics.k8s.io",
                  "version": "v1beta1", "caBundle": base64.b64encode(ca_pem).decode(),
                  "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]


def as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def kubeconfig(server: str, ca_pem: bytes, token: str) -> str:
    """A kubeconfig for metrics-server's ServiceAccount token."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "ms",
        "clusters": [{"name": "cluster", "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [{"name": "ms", "context": {"cluster": "cluster", "user": NAME}}]})


def serving_pair(directory: Path) -> tuple[bytes, Path, Path]:
    """A throwaway CA (its PEM is the APIService's caBundle) and a serving certificate for the
    service name the aggregator verifies, localhost and 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NAME}-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"{NAME}.{NAMESPACE}.svc"), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NAME}.{NAMESPACE}.svc")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "serving.crt", directory / "serving.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path


def argv(binary: Path, port: int, cert: Path, key: Path, config: Path, kubelet_ca: Path, node_selector: str = "") -> list[str]:
    """metrics-server's command line (README.md explains each choice)."""
    args = [str(binary), f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}",
            f"--kubeconfig={config}", f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
            "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            f"--kubelet-certificate-authority={kubelet_ca}",
            f"--metric-resolution={RESOLUTION}", f"--kubelet-request-timeout={REQUEST_TIMEOUT}", "-v=2"]
    if node_selector:
        args.append(f"--node-selector={node_selector}")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the command line (by hand, the demo) -----------------------------------------------------------


def _kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"hack/metrics-server/run: kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _cluster() -> tuple[str, bytes]:
    view = json.loads(_kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return cluster["server"], ca


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def start(node_selector: str) -> int:
    from msbuild import BuildError, build, resolve_version

    state = STATE_DIR / "state.json"
    if state.exists() and _alive(json.loads(state.read_text())):
        print(f"already running: {state.read_text()}")
        return 0
    try:
        binary = build(resolve_version())
    except BuildError as error:
        print(f"hack/metrics-server/run: {error}", file=sys.stderr)
        return 1
    server, cluster_ca = _cluster()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    kubelet_ca = Path(os.environ["VNODE_CLUSTER_CA"]).read_bytes() if os.environ.get("VNODE_CLUSTER_CA") else cluster_ca
    (STATE_DIR / "cluster-ca.crt").write_bytes(kubelet_ca)
    port = free_port()
    ca_pem, cert, key = serving_pair(STATE_DIR)
    _kubectl("apply", "-f", "-", input=as_list(rbac_manifests()))
    token = _kubectl("-n", NAMESPACE, "create", "token", NAME, "--duration=24h").stdout.strip()
    config = STATE_DIR / "metrics-server.kubeconfig"
    config.write_text(kubeconfig(server, cluster_ca, token))
    config.chmod(0o600)
    with open(STATE_DIR / "metrics-server.log", "ab") as log:
        proc = subprocess.Popen(argv(binary, port, cert, key, config, STATE_DIR / "cluster-ca.crt", node_selector),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    state.write_text(json.dumps({"pid": proc.pid, "start_time": _start_time(proc.pid), "port": port}))
    _kubectl("apply", "-f", "-", input=as_list(service_manifests(port, ca_pem)))
    for _ in range(120):
        if _available():
            print(f"metrics-server pid {proc.pid} on 127.0.0.1:{port}; APIService {APISERVICE} Available "
                  f"(log {STATE_DIR / 'metrics-server.log'})")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(1)
    print(f"hack/metrics-server/run: APIService not Available; see {STATE_DIR / 'metrics-server.log'}", file=sys.stderr)
    return 1


def _alive(record: dict[str, Any]) -> bool:
    pid = int(record.get("pid", 0))
    return pid > 0 and _start_time(pid) == record.get("start_time")


def _available() -> bool:
    out = _kubectl("get", "apiservice", APISERVICE, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)


def stop() -> int:
    _kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false", check=False)
    state = STATE_DIR / "state.json"
    if not state.exists():
        return 0
    record = json.loads(state.read_text())
    if _alive(record):  # our process (pid + start time), never another one reusing the pid
        os.kill(int(record["pid"]), signal.SIGTERM)
        for _ in range(40):
            if not _alive(record):
                break
            time.sleep(0.5)
        else:
            os.kill(int(record["pid"]), signal.SIGKILL)
    state.unlink()
    print("metrics-server stopped, APIService removed")
    return 0


def main(args: list[str]) -> int:
    if args[:1] == ["start"]:
        selector = ""
        if len(args) == 3 and args[1] == "--node-selector":
            selector = args[2]
        elif len(args) != 1:
            print("usage: hack/metrics-server/run start [--node-selector key=value]", file=sys.stderr)
            return 2
        return start(selector)
    if args == ["stop"]:
        return stop()
    if args == ["status"]:
        print("Available" if _available() else "not available")
        return 0 if _available() else 3
    print("usage: hack/metrics-server/run start [--node-selector key=value] | status | stop", file=sys.stderr)
    return 2

"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback, plus the RBAC bootstrap."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import pki
from .component import Component, ComponentError, Probe, http_probe, tls_context
from .layout import Layout

# NotReady after 20 s without a heartbeat instead of 50 s: node-lifecycle tests stay short while the
# semantics (lease expiry → NotReady → taints → eviction after the toleration) stay the real ones.
NODE_MONITOR_GRACE_PERIOD = "20s"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"  # kubeadm's default issuer

# The identity the apiserver presents to kubelets (logs/exec/port-forward) gets exactly the kubelet
# API rights, the way kubeadm and local-up-cluster grant them; kubelet-side tests can rely on it.
RBAC_BOOTSTRAP = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: vnode-testbed:apiserver-kubelet-client
  labels: {{app.kubernetes.io/managed-by: vnode-testbed}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: {pki.KUBELET_CLIENT_USER}
"""


def components(layout: Layout, owner: str) -> dict[str, Component]:
    b, p, k = layout.bin_dir, layout.pki_dir, layout.kube_dir
    logs, run = layout.log_dir, layout.run_dir
    # The instance's ports (the defaults for the shared instance, so its command lines never change).
    etcd_port, peer_port = layout.etcd_client_port, layout.etcd_peer_port
    api_port, kcm_port, sched_port = layout.apiserver_port, layout.controller_manager_port, layout.scheduler_port

    def comp(name: str, argv: list[str], probe, port: int, **kw) -> Component:
        return Component(name, argv, logs / f"{name}.log", probe, run, owner, port=port, **kw)

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd = comp(
        "etcd",
        [
            str(b / "etcd"),
            "--name=testbed",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=testbed=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",  # a disposable test store: trade durability on power loss for speed
            "--log-level=warn",
        ],
        http_probe(f"{etcd_url}/health", expect='"health":"true"'),
        etcd_port,
    )

    apiserver = comp(
        "kube-apiserver",
        [
            str(b / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            # Without an explicit address the apiserver would advertise eth0's; we stay on loopback.
            "--advertise-address=127.0.0.1",
            # Endpoints validation rejects loopback IPs, so the `kubernetes` Service gets no endpoints
            # (nothing here runs in-cluster pods that would dial it; everything uses 127.0.0.1:6443).
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            # Aggregation layer as kubeadm sets it up; also lets the controller-manager and scheduler
            # read a complete extension-apiserver-authentication ConfigMap.
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT_CN}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--profiling=false",
        ],
        _admin_probe(f"https://127.0.0.1:{api_port}/readyz", p),
        api_port,
        config_files=[p / "apiserver.crt", p / "sa.pub"],
        ready_timeout=120,
    )

    kcm_kc = k / "controller-manager.kubeconfig"
    controller_manager = comp(
        "kube-controller-manager",
        [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            "--leader-elect=false",  # a single instance; leader election would only add start latency
            "--controllers=*",  # the default set: node lifecycle, GC, csrsigning, service accounts, ...
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=true",
            # csrsigning signs approved kubernetes.io/kubelet-serving (and client) CSRs with the cluster CA.
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--cluster-name={pki.CLUSTER_NAME}",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
        ],
        http_probe(f"https://127.0.0.1:{kcm_port}/healthz", tls_context(), expect="ok"),
        kcm_port,
        config_files=[kcm_kc],
    )

    sched_kc = k / "scheduler.kubeconfig"
    scheduler = comp(
        "kube-scheduler",
        [
            str(b / "kube-scheduler"),
            f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            "--leader-elect=false",
        ],
        http_probe(f"https://127.0.0.1:{sched_port}/healthz", tls_context(), expect="ok"),
        sched_port,
        config_files=[sched_kc],
    )
    return {c.name: c for c in (etcd, apiserver, controller_manager, scheduler)}


def _admin_probe(url: str, pki_dir: Path) -> Probe:
    """Probe as the admin client. The TLS context is built per probe: before the first `up` of a
    fresh state dir there is no PKI yet, and `status` must still answer ("stopped")."""

    def probe() -> str | None:
        try:
            ctx = tls_context(pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key")
        except OSError as e:
            return f"no admin credentials in {pki_dir}: {e}"
        return http_probe(url, ctx, expect="ok")()

    return probe


def bootstrap_rbac(layout: Layout) -> None:
    argv = [str(layout.bin_dir / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}", "apply", "-f", "-"]
    p = subprocess.run(argv, input=RBAC_BOOTSTRAP, capture_output=True, text=True, timeout=60, check=False)
    if p.returncode != 0:
        raise ComponentError("rbac-bootstrap", f"kubectl apply failed: {p.stderr.strip()}", None)

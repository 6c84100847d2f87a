"""Where the testbed keeps things, which ports it uses, and which versions it runs.

Everything is derived from two roots so a scratch run (CI, a cold-build measurement) can relocate it:
  VNODE_TESTBED_CACHE  built binaries, per Kubernetes version (default ~/.cache/vnode-testbed)
  VNODE_TESTBED_STATE  PKI, kubeconfigs, etcd/SLURM/MariaDB data, pidfiles and logs (default /var/lib/vnode-testbed)
The state root is outside $HOME because MariaDB and munge run as their own users and must traverse it.

One state dir is one testbed instance. Besides the shared full instance (Kubernetes + SLURM on the
default ports), further *kube-only* instances may run at the same time: a control plane of another
version in a state dir of its own, on the default ports shifted by a port offset, with no SLURM
(SLURM's config, munge socket and ports exist once per machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = HACK_DIR.parent

# The Kubernetes minor we test against; `K8S_VERSION` overrides the exact patch.
K8S_MINOR = "1.35"

# Loopback ports. Defaults of each daemon, so logs and docs from upstream read the same.
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
MARIADB_PORT = 3306
SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818
SLURMDBD_PORT = 6819

KUBE_PORTS = (APISERVER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, CONTROLLER_MANAGER_PORT, SCHEDULER_PORT)
# Every port the shared instance or a node agent may hold: a shifted control plane must avoid them all.
RESERVED_PORTS = frozenset(KUBE_PORTS + (MARIADB_PORT, SLURMCTLD_PORT, SLURMD_PORT, SLURMDBD_PORT, 10250))
# Shifted ports stay below Linux's ephemeral range (32768+), where tests bind their port-0 servers.
MAX_PORT = 32767

# Debian's paths: SLURM clients (sbatch, squeue, ...) read /etc/slurm/slurm.conf with no environment
# at all, exactly like on a real site, so a plugin spawned by any test or demo finds the cluster.
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
MUNGE_SOCKET_DIR = Path("/run/munge")  # libmunge's compiled-in default; slurm uses it implicitly
MUNGE_KEY = Path("/etc/munge/munge.key")


class LayoutError(ValueError):
    """A testbed instance's settings are unusable (names the setting and why)."""


def validate_port_offset(offset: int) -> None:
    """0 is the shared instance's ports; any other offset must move every control-plane port onto a
    free, non-ephemeral port that no other default port of the testbed uses."""
    if offset == 0:
        return
    shifted = {p + offset for p in KUBE_PORTS}
    if offset < 0 or max(shifted) > MAX_PORT:
        raise LayoutError(f"--port-offset {offset}: must be between 0 and {MAX_PORT - max(KUBE_PORTS)}")
    clash = sorted(shifted & RESERVED_PORTS)
    if clash:
        raise LayoutError(f"--port-offset {offset}: would move a control-plane port onto {clash}, a default port")


def cache_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_CACHE") or Path.home() / ".cache" / "vnode-testbed")


def state_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_STATE") or "/var/lib/vnode-testbed")


@dataclass(frozen=True)
class Layout:
    """All paths and ports of one testbed instance for one Kubernetes version."""

    k8s_version: str  # "1.35.4", no leading v
    cache: Path
    state: Path
    kube_only: bool = False  # control plane only: no SLURM, no singularity stand-in
    port_offset: int = 0  # added to every control-plane port (0: the defaults)

    @classmethod
    def for_version(cls, k8s_version: str, kube_only: bool = False, port_offset: int = 0) -> Layout:
        validate_port_offset(port_offset)
        return cls(
            k8s_version=k8s_version.removeprefix("v"),
            cache=cache_root(),
            state=state_root(),
            kube_only=kube_only,
            port_offset=port_offset,
        )

    # --- ports --------------------------------------------------------------------------------
    @property
    def apiserver_port(self) -> int:
        return APISERVER_PORT + self.port_offset

    @property
    def etcd_client_port(self) -> int:
        return ETCD_CLIENT_PORT + self.port_offset

    @property
    def etcd_peer_port(self) -> int:
        return ETCD_PEER_PORT + self.port_offset

    @property
    def controller_manager_port(self) -> int:
        return CONTROLLER_MANAGER_PORT + self.port_offset

    @property
    def scheduler_port(self) -> int:
        return SCHEDULER_PORT + self.port_offset

    # --- build cache -------------------------------------------------------------------------
    @property
    def version_dir(self) -> Path:
        return self.cache / self.k8s_version

    @property
    def bin_dir(self) -> Path:
        return self.version_dir / "bin"

    @property
    def wrapper_dir(self) -> Path:
        return self.version_dir / "wrapper"

    # --- runtime state -----------------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.state / "pki"

    @property
    def kube_dir(self) -> Path:
        return self.state / "kube"

    @property
    def etcd_data(self) -> Path:
        return self.state / "etcd"

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    @property
    def slurm_dir(self) -> Path:
        return self.state / "slurm"

    @property
    def mariadb_dir(self) -> Path:
        return self.state / "mariadb"

    @property
    def standin_dir(self) -> Path:
        return HACK_DIR / "bin"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kube_dir / "admin.kubeconfig"

    @property
    def info_file(self) -> Path:
        return self.state / "testbed.json"

    @property
    def instance_file(self) -> Path:
        """The instance's settings (kube_only, port_offset), so `down`/`status`/`env` need no flags."""
        return self.state / "instance.json"

    @property
    def lock_file(self) -> Path:
        # A full instance touches machine-wide things (/etc/slurm, munge, default ports): one `up`/`down`
        # at a time on the machine. A kube-only instance owns only its state dir and shifted ports.
        if not self.kube_only and Path("/run/lock").is_dir():
            return Path("/run/lock/vnode-testbed.lock")
        return self.state / "lock"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


@dataclass(frozen=True)
class ExtraInstance:
    """A kube-only control plane of another Kubernetes version that tests run next to the shared one."""

    k8s_version: str
    state_suffix: str  # its state dir is the shared state root + this suffix (relocates with it)
    port_offset: int

    @property
    def state(self) -> Path:
        return Path(str(state_root()) + self.state_suffix)


# Kubernetes 1.36: the apiserver passes kubectl's WebSocket exec straight to a kubelet whose Node
# declares ExtendWebSocketsToKubelet (1.35 always translates to SPDY). Pinned: the tests that use it
# and hack/setup's prebuild must agree. Ports 6543, 2479/2480, 10357, 10359.
K8S_136 = ExtraInstance(k8s_version="1.36.3", state_suffix="-1.36", port_offset=100)
EXTRA_INSTANCES = (K8S_136,)

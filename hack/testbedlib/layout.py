"""Where the testbed keeps things, which ports it uses, and which versions it runs.

Everything is derived from two roots so a scratch run (CI, a cold-build measurement) can relocate it:
  VNODE_TESTBED_CACHE  built binaries, per Kubernetes version (default ~/.cache/vnode-testbed)
  VNODE_TESTBED_STATE  PKI, kubeconfigs, etcd/SLURM/MariaDB data, pidfiles and logs (default /var/lib/vnode-testbed)
The state root is outside $HOME because MariaDB and munge run as their own users and must traverse it.
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

# Debian's paths: SLURM clients (sbatch, squeue, ...) read /etc/slurm/slurm.conf with no environment
# at all, exactly like on a real site, so a plugin spawned by any test or demo finds the cluster.
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
MUNGE_SOCKET_DIR = Path("/run/munge")  # libmunge's compiled-in default; slurm uses it implicitly
MUNGE_KEY = Path("/etc/munge/munge.key")


def cache_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_CACHE") or Path.home() / ".cache" / "vnode-testbed")


def state_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_STATE") or "/var/lib/vnode-testbed")


@dataclass(frozen=True)
class Layout:
    """All paths of one testbed instance for one Kubernetes version."""

    k8s_version: str  # "1.35.4", no leading v
    cache: Path
    state: Path

    @classmethod
    def for_version(cls, k8s_version: str) -> Layout:
        return cls(k8s_version=k8s_version.removeprefix("v"), cache=cache_root(), state=state_root())

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
    def lock_file(self) -> Path:
        return Path("/run/lock/vnode-testbed.lock") if Path("/run/lock").is_dir() else self.state / "lock"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{APISERVER_PORT}"

"""A single-node SLURM cluster from Debian's packages: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Accounting goes through slurmdbd + MariaDB, so plain `sacct -j <ids> --parsable2 ...` answers for
finished jobs exactly as on a production site (and `sstat` works, through jobacct_gather/linux).
No systemd and no cgroups exist here: processes are tracked by proctrack/linuxproc and nothing is
confined (task/none).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from .component import Component, ComponentError, command_probe
from .layout import (
    MARIADB_PORT,
    MUNGE_KEY,
    MUNGE_SOCKET_DIR,
    SLURM_CONF,
    SLURMCTLD_PORT,
    SLURMD_PORT,
    SLURMDBD_CONF,
    SLURMDBD_PORT,
    Layout,
)

CLUSTER = "vnode-testbed"
NODE = "localhost"  # slurmd runs with -N localhost: the machine's hostname varies, this does not
PARTITION = "debug"
# 8 schedulable CPUs on 2 physical cores (SlurmdParameters=config_overrides): many small test jobs
# run side by side, each still getting the core and memory accounting a real site does.
NODE_CPUS = 8
NODE_MEMORY_MB = 16384  # jobs get --mem from pod limits; 16 GiB of 24 leaves room for the rest
DEF_MEM_PER_CPU_MB = 512  # a job without --mem must not claim the whole node (CR_Core_Memory default)
MIN_JOB_AGE = 120  # squeue forgets finished jobs after 2 min (default 300); sacct keeps them forever
MUNGE_SOCKET = MUNGE_SOCKET_DIR / "munge.socket.2"
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"

SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server")


def slurm_conf(layout: Layout) -> str:
    s = layout.slurm_dir
    return f"""\
# Written by vnode's hack/testbed on every `up`. A disposable single-node TEST cluster; edits are lost.
ClusterName={CLUSTER}
SlurmctldHost={NODE}
SlurmctldPort={SLURMCTLD_PORT}
SlurmdPort={SLURMD_PORT}
# slurmctld and slurmd bind the node's address (127.0.0.1), not every interface. slurmdbd has no
# such option and listens on all interfaces (port {SLURMDBD_PORT}).
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
# The submitter's rlimits are not copied into jobs: this VM lacks CAP_SYS_RESOURCE to raise them.
PropagateResourceLimits=NONE
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={DEF_MEM_PER_CPU_MB}
# Declared CPUs exceed the physical cores on purpose; without this slurmd would drain the node.
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge={MIN_JOB_AGE}
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={SLURMDBD_PORT}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=10
JobCompType=jobcomp/none
StateSaveLocation={s / "ctld"}
SlurmdSpoolDir={s / "d"}
SlurmctldPidFile={layout.run_dir / "slurmctld.pid"}
SlurmdPidFile={layout.run_dir / "slurmd.pid"}
SlurmctldDebug=info
SlurmdDebug=info
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} Sockets=1 CoresPerSocket={NODE_CPUS} ThreadsPerCore=1 RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurmdbd_conf(layout: Layout, password: str) -> str:
    return f"""\
# Written by vnode's hack/testbed on every `up`. A disposable TEST accounting daemon.
AuthType=auth/munge
DbdHost=localhost
DbdPort={SLURMDBD_PORT}
SlurmUser=root
DebugLevel=info
PidFile={layout.run_dir / "slurmdbd.pid"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={MARIADB_PORT}
StorageUser={DB_USER}
StoragePass={password}
StorageLoc={DB_NAME}
"""


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".vnode-testbed.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
    os.chmod(path, mode)


def _chown(path: Path, user: str) -> None:
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid)


def missing_packages() -> list[str]:
    need = {
        "munged": "munge",
        "slurmctld": "slurmctld",
        "slurmd": "slurmd",
        "sbatch": "slurm-client",
        "slurmdbd": "slurmdbd",
        "mariadbd": "mariadb-server",
        "mariadb-install-db": "mariadb-server",
    }
    paths = "/usr/sbin:/usr/bin:/sbin:/bin"
    return sorted({pkg for exe, pkg in need.items() if shutil.which(exe, path=paths) is None})


def _db_password(layout: Layout) -> str:
    f = layout.mariadb_dir / "slurm-db.password"
    if not f.exists():
        layout.mariadb_dir.mkdir(parents=True, exist_ok=True)
        _write_if_changed(f, secrets.token_hex(16), 0o600)
    return f.read_text().strip()


def prepare(layout: Layout) -> None:
    """Directories, munge key and config files; safe to repeat."""
    missing = missing_packages()
    if missing:
        raise ComponentError("slurm", f"Debian packages not installed: {' '.join(missing)} (run hack/setup)", None)
    for d in (layout.slurm_dir / "ctld", layout.slurm_dir / "d", layout.run_dir, layout.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    _chown(MUNGE_SOCKET_DIR, "munge")
    os.chmod(MUNGE_SOCKET_DIR, 0o755)
    if not MUNGE_KEY.exists():
        # Debian's postinst normally creates it; recreate it the documented way if someone removed it.
        subprocess.run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True)
        _chown(MUNGE_KEY, "munge")
        os.chmod(MUNGE_KEY, 0o600)
    _write_if_changed(SLURM_CONF, slurm_conf(layout), 0o644)
    _write_if_changed(SLURMDBD_CONF, slurmdbd_conf(layout, _db_password(layout)), 0o600)
    _init_mariadb(layout)


def _mariadb_data(layout: Layout) -> Path:
    return layout.mariadb_dir / "data"


def _mariadb_socket(layout: Layout) -> Path:
    return layout.mariadb_dir / "mysqld.sock"


def _init_mariadb(layout: Layout) -> None:
    data = _mariadb_data(layout)
    layout.mariadb_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.state, 0o755)  # mysqld runs as `mysql` and must traverse down to its datadir
    _chown(layout.mariadb_dir, "mysql")  # mysqld creates its socket and pidfile here
    os.chmod(layout.mariadb_dir, 0o755)
    if (data / "mysql").is_dir():
        return
    data.mkdir(exist_ok=True)
    _chown(data, "mysql")
    log = layout.log_dir / "mariadb-install-db.log"
    with open(log, "w") as out:
        p = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if p.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise ComponentError("mariadb", "mariadb-install-db failed", log)


def _mariadb_sql(layout: Layout, sql: str) -> None:
    p = subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={_mariadb_socket(layout)}", "-u", "root", "-e", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if p.returncode != 0:
        raise ComponentError("mariadb", f"SQL setup failed: {p.stderr.strip()}", None)


def ensure_database(layout: Layout) -> None:
    """The accounting database and its user; idempotent (also re-syncs the password)."""
    pw = _db_password(layout)
    stmts = [f"CREATE DATABASE IF NOT EXISTS {DB_NAME}"]
    for host in ("127.0.0.1", "localhost"):
        stmts += [
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{pw}'",
            f"ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{pw}'",
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}'",
        ]
    _mariadb_sql(layout, "; ".join(stmts) + ";")


def ensure_cluster_registered() -> None:
    """slurmctld needs its cluster in the accounting database before its first start."""
    p = subprocess.run(
        ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if p.returncode != 0:
        raise ComponentError("slurmdbd", f"sacctmgr list cluster failed: {p.stderr.strip()}", None)
    if CLUSTER not in p.stdout.split():
        p = subprocess.run(
            ["sacctmgr", "-i", "add", "cluster", CLUSTER], capture_output=True, text=True, timeout=60, check=False
        )
        if p.returncode != 0:
            raise ComponentError(
                "slurmdbd", f"sacctmgr add cluster failed: {p.stderr.strip() or p.stdout.strip()}", None
            )


def _node_state(out: str) -> str | None:
    state = out.strip()
    if state in ("idle", "mix", "alloc", "comp"):
        return None
    return f"node {NODE} is {state or 'not registered'!r}"


def components(layout: Layout, owner: str) -> dict[str, Component]:
    logs, run = layout.log_dir, layout.run_dir

    def comp(name: str, argv: list[str], probe, **kw) -> Component:
        return Component(name, argv, logs / f"{name}.log", probe, run, owner, **kw)

    munge = comp(
        "munged",
        [
            "/usr/sbin/munged",
            "--foreground",
            f"--socket={MUNGE_SOCKET}",
            f"--pid-file={MUNGE_SOCKET_DIR / 'munged.pid'}",
        ],
        command_probe(["/usr/bin/munge", "-n"]),
        user="munge",
        config_files=[MUNGE_KEY],
    )
    mariadb = comp(
        "mariadb",
        [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={_mariadb_data(layout)}",
            "--user=mysql",
            "--bind-address=127.0.0.1",
            f"--port={MARIADB_PORT}",
            f"--socket={_mariadb_socket(layout)}",
            f"--pid-file={layout.mariadb_dir / 'mysqld.pid'}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=128M",  # a tiny accounting DB; keep the footprint small
            "--innodb-lock-wait-timeout=900",
        ],  # SLURM's documented recommendation for slurmdbd
        command_probe(["mariadb-admin", "--no-defaults", f"--socket={_mariadb_socket(layout)}", "-u", "root", "ping"]),
        port=MARIADB_PORT,
    )
    slurmdbd = comp(
        "slurmdbd",
        ["/usr/sbin/slurmdbd", "-D"],
        command_probe(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"]),
        port=SLURMDBD_PORT,
        config_files=[SLURMDBD_CONF],
    )
    slurmctld = comp(
        "slurmctld",
        ["/usr/sbin/slurmctld", "-D", "-i"],  # -i: start even if a state file is unreadable
        command_probe(["scontrol", "ping"], lambda out: None if "UP" in out else out.strip()),
        port=SLURMCTLD_PORT,
        config_files=[SLURM_CONF],
    )
    slurmd = comp(
        "slurmd",
        ["/usr/sbin/slurmd", "-D", "-N", NODE],
        command_probe(["sinfo", "-h", "-n", NODE, "-o", "%t"], _node_state),
        port=SLURMD_PORT,
        config_files=[SLURM_CONF],
    )
    return {c.name: c for c in (munge, mariadb, slurmdbd, slurmctld, slurmd)}


def cancel_all_jobs() -> None:
    """Cancel every job so slurmstepd and job processes end before the daemons do."""
    p = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30, check=False)
    ids = p.stdout.split() if p.returncode == 0 else []
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)


def jobs_remaining() -> int:
    p = subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CG,S", "-o", "%A"], capture_output=True, text=True, timeout=30, check=False
    )
    return len(p.stdout.split()) if p.returncode == 0 else 0

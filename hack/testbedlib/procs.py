"""Background daemons owned by the testbed: spawn, record, check and stop them by pid.

Each daemon runs in its own session (setsid), so its pid is also its process-group id, and its pid is
recorded with the kernel's start time of that pid: a recycled pid is never mistaken for ours.
Daemons also start inside a cgroup of their own (cgroup v2, no controllers: pure bookkeeping), which
every descendant inherits whatever it does with sessions or parents. slurmstepd daemonises away from
slurmd and even overwrites its environment, yet stays in that cgroup, so `down` finds it and nothing
else. Where no writable cgroup v2 hierarchy exists, the OWNER_ENV environment marker is the fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OWNER_ENV = "VNODE_TESTBED_OWNER"


@dataclass(frozen=True)
class ProcRecord:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: distinguishes our pid from a reused one
    argv: list[str]
    fingerprint: str  # hash of argv + config files; a change means "restart me"
    log: str

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens; everything after the last ')' is well formed.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(rec: ProcRecord) -> bool:
    fields = _stat_fields(rec.pid)
    if fields is None or int(fields[19]) != rec.start_ticks:
        return False
    return fields[0] not in ("Z", "X")  # a zombie has exited; its parent just hasn't reaped it


def _cgroup_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):  # pure v2, or hybrid's v2 part
        if (root / "cgroup.procs").exists() and (root / "cgroup.subtree_control").exists() and os.access(root, os.W_OK):
            return root
    return None


def cgroup_dir(owner: str, create: bool = True) -> Path | None:
    """The testbed's own cgroup (created on demand); None where cgroup v2 is not writable."""
    root = _cgroup_root()
    if root is None:
        return None
    path = root / f"vnode-testbed-{hashlib.sha256(owner.encode()).hexdigest()[:8]}"
    if not create:
        return path if path.is_dir() else None
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path


def cgroup_pids(owner: str) -> list[int]:
    cgroup = cgroup_dir(owner, create=False)
    if cgroup is None:
        return []
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def remove_cgroup(owner: str) -> None:
    cgroup = cgroup_dir(owner, create=False)
    if cgroup is not None:
        try:
            cgroup.rmdir()
        except OSError:
            pass  # still has members (should not happen after down) or already gone


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str],
    owner: str,
    fingerprint: str,
    user: str | None = None,
    cwd: Path | None = None,
) -> ProcRecord:
    """Start one daemon in the background, in a new session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = list(argv)
    if user is not None:
        # setpriv (util-linux) drops to the daemon's user in the exec chain, after the cgroup move below.
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    cgroup = cgroup_dir(owner)
    if cgroup is not None:
        # The shell joins the cgroup and then execs the daemon (same pid), so not even a fork in the
        # daemon's first microsecond escapes; a failed write only loses the bookkeeping, not the start.
        cmd = ["/bin/sh", "-c", 'echo $$ 2>/dev/null >"$0"; exec "$@"', str(cgroup / "cgroup.procs"), *cmd]
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} testbed starts {name}: {argv}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, OWNER_ENV: owner},
            cwd=cwd,
            start_new_session=True,
        )
    ticks = start_ticks(proc.pid)
    if ticks is None:  # exited (and was reaped?) within microseconds; report it as a failed start
        ticks = -1
    # The Popen object is dropped on purpose: the daemon outlives this command and init reaps it.
    proc.returncode = 0  # keep Popen.__del__ from warning about a "still running" child
    return ProcRecord(name=name, pid=proc.pid, start_ticks=ticks, argv=argv, fingerprint=fingerprint, log=str(log))


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(…, 0) also succeeds for a group made only of zombies; look for a live member.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def stop(rec: ProcRecord, grace: float = 15.0) -> bool:
    """SIGTERM our daemon's process group, SIGKILL it after `grace` seconds. True if it was running."""
    if not is_alive(rec):
        return False
    try:
        own_group = os.getpgid(rec.pid) == rec.pid
    except ProcessLookupError:
        return False
    send = (lambda sig: os.killpg(rec.pid, sig)) if own_group else (lambda sig: os.kill(rec.pid, sig))
    alive = (lambda: _process_group_alive(rec.pid)) if own_group else (lambda: is_alive(rec))
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(0.1)
    try:
        send(signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def owned_pids(owner: str) -> list[int]:
    """Live processes of the testbed: members of its cgroup, and processes carrying its env marker."""
    return sorted(set(cgroup_pids(owner)) | set(_marked_pids(owner)))


def _marked_pids(owner: str) -> list[int]:
    """Live processes whose environment carries our owner marker (daemons and what they forked)."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path | str, lines: int = 40) -> str:
    try:
        data = Path(path).read_bytes()[-64 * 1024 :]
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""

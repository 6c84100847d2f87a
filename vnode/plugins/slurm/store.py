"""Pod directories: the Go plugin's on-disk layout, recovery after a restart, per-pod locks.

`DataRootFolder/<namespace>-<uid>/` holds `JobID.jid`, `PodUID.uid`, `PodNamespace.ns` (no trailing
newline, as the Go plugin writes them), so a plugin started on a data root written by the Go plugin
(or by an earlier run of this one) finds every job again. vnode adds `pod.json` (the pod as created,
for exec and logs), `vnode-deleted` (a pod deleted and kept for post-mortem until its retention
ends) and `JobState.json` (the final SLURM state, so a restart needs no sacct for finished jobs).

The file functions here block; callers run them in a thread on purpose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .volumes import DIR_MODE, EMPTYDIR_MODE

log = logging.getLogger(__name__)

JOB_ID_FILE, UID_FILE, NS_FILE = "JobID.jid", "PodUID.uid", "PodNamespace.ns"
POD_FILE = "pod.json"
DELETED_FILE = "vnode-deleted"
FINAL_STATE_FILE = "JobState.json"
ROOT_MODE = 0o755


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    pod_dir: Path
    job_id: str = ""  # "" while the job is being submitted
    deleted_at: float | None = None  # wall-clock time of the delete
    final: dict[str, Any] | None = None  # the job's final state, once known


class PodStore:
    """In-memory index of pod records backed by the pod directories."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self._records: dict[str, PodRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tombstones: dict[str, float] = {}  # uid → time: deleted before (or without) a create

    # --- locking ------------------------------------------------------------------------------
    def lock(self, uid: str) -> asyncio.Lock:
        """The pod's lock: creates and deletes of one pod run one after the other."""
        return self._locks.setdefault(uid, asyncio.Lock())

    # --- records ------------------------------------------------------------------------------
    def get(self, uid: str) -> PodRecord | None:
        return self._records.get(uid)

    def live(self, uid: str) -> PodRecord | None:
        record = self._records.get(uid)
        return record if record is not None and record.deleted_at is None else None

    def add(self, record: PodRecord) -> None:
        self._records[record.uid] = record

    def forget(self, uid: str) -> None:
        self._records.pop(uid, None)
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]

    def records(self) -> Iterator[PodRecord]:
        return iter(list(self._records.values()))

    def tombstone(self, uid: str) -> None:
        self._tombstones[uid] = time.time()

    def is_tombstoned(self, uid: str) -> bool:
        return uid in self._tombstones

    def expire_tombstones(self, older_than: float) -> None:
        cutoff = time.time() - older_than
        for uid in [u for u, t in self._tombstones.items() if t < cutoff]:
            del self._tombstones[uid]

    # --- disk (blocking) ----------------------------------------------------------------------
    def ensure_root(self) -> None:
        # 0755, not 0700: jobs run with `--uid` must reach their own (0700) pod directory below it.
        self.data_root.mkdir(parents=True, exist_ok=True, mode=ROOT_MODE)

    def load(self) -> list[PodRecord]:
        """Recover every pod directory that has the Go plugin's three id files."""
        self.ensure_root()
        found = []
        for entry in sorted(self.data_root.iterdir()):
            record = read_record(entry)
            if record is not None:
                self._records[record.uid] = record
                found.append(record)
        return found


def read_record(pod_dir: Path) -> PodRecord | None:
    try:
        if not pod_dir.is_dir():
            return None
        job_id = (pod_dir / JOB_ID_FILE).read_text().strip()
        uid = (pod_dir / UID_FILE).read_text().strip()
        namespace = (pod_dir / NS_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not job_id or not uid:
        return None
    name = ""
    try:
        name = str(json.loads((pod_dir / POD_FILE).read_text()).get("metadata", {}).get("name", ""))
    except (OSError, ValueError, AttributeError):
        pass
    deleted_at = None
    try:
        deleted_at = float((pod_dir / DELETED_FILE).read_text().strip() or pod_dir.stat().st_mtime)
    except (OSError, ValueError):
        pass
    final = None
    try:
        final = json.loads((pod_dir / FINAL_STATE_FILE).read_text())
    except (OSError, ValueError):
        pass
    return PodRecord(uid=uid, namespace=namespace, name=name, pod_dir=pod_dir, job_id=job_id,
                     deleted_at=deleted_at, final=final)


def read_pod(pod_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((pod_dir / POD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file with exactly `mode` (not subject to the umask), replacing any old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_pod_dir(pod_dir: Path, dirs: list[str], empty_dirs: list[str], files: list[tuple[str, bytes, int]],
                  uid: int | None = None) -> None:
    """Create the pod directory (0700) with its sub-directories and files."""
    pod_dir.mkdir(mode=DIR_MODE, parents=False, exist_ok=True)
    os.chmod(pod_dir, DIR_MODE)
    for d in dirs:
        (pod_dir / d).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for d in empty_dirs:
        (pod_dir / d).mkdir(parents=True, exist_ok=True)
        os.chmod(pod_dir / d, EMPTYDIR_MODE)
    for rel, data, mode in files:
        target = pod_dir / rel
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _write(target, data, mode)
    if uid is not None and os.geteuid() == 0:
        # The job runs as `uid` (sbatch --uid): it must own what it reads and writes.
        for root, _dirs, names in os.walk(pod_dir):
            os.chown(root, uid, -1)
            for n in names:
                os.chown(os.path.join(root, n), uid, -1)


def write_ids(pod_dir: Path, job_id: str, uid: str, namespace: str) -> None:
    """The Go plugin's restart state, written right after sbatch answered."""
    _write(pod_dir / JOB_ID_FILE, job_id.encode(), 0o644)
    _write(pod_dir / UID_FILE, uid.encode(), 0o644)
    _write(pod_dir / NS_FILE, namespace.encode(), 0o644)


def write_json(pod_dir: Path, name: str, value: Any, mode: int = 0o600) -> None:
    _write(pod_dir / name, json.dumps(value, separators=(",", ":")).encode("utf-8"), mode)


def mark_deleted(pod_dir: Path, when: float) -> None:
    try:
        _write(pod_dir / DELETED_FILE, f"{when:.3f}".encode(), 0o644)
    except FileNotFoundError:
        pass


def remove_pod_dir(pod_dir: Path) -> None:
    """Remove a pod directory; only ever a direct child of the data root."""
    shutil.rmtree(pod_dir, ignore_errors=True)

"""Which test sessions hold a testbed instance, so the last one out can stop an instance a session started.

An extra instance (the 1.36 control plane) is used by a few tests only, so the pytest fixture stops it
at the end of the session that brought it up — unless another live session still uses it, or it was
running before any session asked for it (a developer's `hack/testbed up`). Files in <state>:

  holders/<pid>       one per session using the instance; holds the pid's kernel start time, so a
                      recycled pid of a crashed session never counts as a holder
  started-by-session  present while the running instance was started by a test session
  holders.lock        serialises hold/release (not the `up`/`down` lock: those run while it is held)
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import procs


def _dir(state: Path) -> Path:
    return state / "holders"


def _marker(state: Path) -> Path:
    return state / "started-by-session"


@contextmanager
def guarded(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "holders.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def hold(state: Path, pid: int | None = None) -> None:
    pid = os.getpid() if pid is None else pid
    ticks = procs.start_ticks(pid)
    if ticks is None:
        raise ProcessLookupError(f"cannot hold {state} for pid {pid}: no such process")
    _dir(state).mkdir(parents=True, exist_ok=True)
    (_dir(state) / str(pid)).write_text(f"{ticks}\n")


def live_holders(state: Path) -> list[int]:
    """Pids of holders that are still the same, running process; stale records are removed."""
    live = []
    for record in sorted(_dir(state).glob("[0-9]*")):
        pid = int(record.name)
        try:
            recorded = record.read_text().strip()
        except OSError:
            continue
        ticks = procs.start_ticks(pid)
        if ticks is not None and recorded == str(ticks):
            live.append(pid)
        else:
            record.unlink(missing_ok=True)
    return live


def release(state: Path, pid: int | None = None) -> list[int]:
    """Drop our hold; returns the holders that remain."""
    pid = os.getpid() if pid is None else pid
    (_dir(state) / str(pid)).unlink(missing_ok=True)
    return live_holders(state)


def mark_started_by_session(state: Path) -> None:
    _marker(state).parent.mkdir(parents=True, exist_ok=True)
    _marker(state).write_text(f"{os.getpid()}\n")


def started_by_session(state: Path) -> bool:
    return _marker(state).exists()


def clear_started_by_session(state: Path) -> None:
    _marker(state).unlink(missing_ok=True)

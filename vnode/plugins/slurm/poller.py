"""Batched, cached job states: one `squeue` for every job still in flight, plus one `sacct` for the
ones that left slurmctld's memory — whatever the number of pods asked about.

interLink's VK asks for one pod per call, every 5 s per pod. A refresh therefore covers all active
jobs the plugin knows (not just the ones asked), and its result is kept for StatusCacheSeconds
*per job*, so N per-pod status calls inside that window cost one squeue, and each pod gets its own
state (the Go plugin cached one whole response and returned it for every pod). Concurrent callers
share one in-flight refresh. Final states are kept for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from .parsers import JobInfo
from .slurm_cli import SlurmCli, SlurmCommandError
from .states import Phase, job_state

log = logging.getLogger(__name__)

SACCT_RETRY_SECONDS = 60.0  # after sacct failed (no accounting), try again this much later
# Finished states that SLURM may still turn back into PENDING (requeue), so never cached for good.
REQUEUABLE = ("PREEMPTED", "NODE_FAIL")


def info_to_json(info: JobInfo) -> dict[str, Any]:
    return {"job_id": info.job_id, "state": info.state.name, "reason": info.reason, "exit_code": info.exit_code,
            "signal": info.signal, "start": info.start.isoformat() if info.start else None,
            "end": info.end.isoformat() if info.end else None, "node": info.node, "source": info.source}


def info_from_json(data: dict[str, Any]) -> JobInfo | None:
    try:
        return JobInfo(str(data["job_id"]), job_state(str(data["state"])), str(data.get("reason", "")),
                       data.get("exit_code"), int(data.get("signal") or 0),
                       datetime.fromisoformat(data["start"]) if data.get("start") else None,
                       datetime.fromisoformat(data["end"]) if data.get("end") else None,
                       str(data.get("node", "")), str(data.get("source", "")))
    except (KeyError, TypeError, ValueError):
        return None


def is_final(info: JobInfo) -> bool:
    return info.state.phase is Phase.FINISHED and info.state.name not in REQUEUABLE


class JobPoller:
    def __init__(self, cli: SlurmCli, ttl: float, active_jobs: Callable[[], Iterable[str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cli = cli
        self.ttl = ttl
        self.active_jobs = active_jobs
        self.clock = clock
        self._cache: dict[str, tuple[float, JobInfo | None]] = {}
        self._final: dict[str, JobInfo] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._sacct_disabled_until = 0.0
        self.on_final: Callable[[JobInfo], None] | None = None  # persist final states

    def seed_final(self, info: JobInfo) -> None:
        self._final[info.job_id] = info

    def forget(self, job_id: str) -> None:
        self._cache.pop(job_id, None)
        self._final.pop(job_id, None)

    def cached(self, job_id: str) -> JobInfo | None:
        if job_id in self._final:
            return self._final[job_id]
        entry = self._cache.get(job_id)
        return entry[1] if entry else None

    def _stale(self, job_ids: Iterable[str], as_of: float, newer_than: float | None = None) -> list[str]:
        """Jobs whose cached state is older than the TTL at time `as_of` (or fetched before `newer_than`)."""
        return [j for j in job_ids
                if j not in self._final and (j not in self._cache or as_of - self._cache[j][0] > self.ttl
                                             or (newer_than is not None and self._cache[j][0] < newer_than))]

    def now(self) -> float:
        return self.clock()

    async def get(self, job_ids: Sequence[str], *, newer_than: float | None = None) -> dict[str, JobInfo | None]:
        """Current info per job id (None: SLURM knows nothing about it any more). With `newer_than`
        (a `now()` reading), states fetched before that moment are refreshed regardless of the TTL."""
        asked_at = self.clock()
        stale = self._stale(job_ids, asked_at, newer_than)
        if stale and self._refresh is not None and not self._refresh.done():
            await asyncio.shield(self._refresh)  # someone else is asking squeue right now
            stale = [j for j in self._stale(stale, asked_at) if not self._fetched_after(j, asked_at)]
        if stale:
            wanted = list(dict.fromkeys([*stale, *self._stale(self.active_jobs(), asked_at)]))
            self._refresh = asyncio.ensure_future(self._do_refresh(wanted))
            await asyncio.shield(self._refresh)
        return {j: self.cached(j) for j in job_ids}

    def _fetched_after(self, job_id: str, moment: float) -> bool:
        entry = self._cache.get(job_id)
        return job_id in self._final or (entry is not None and entry[0] >= moment)

    async def _do_refresh(self, job_ids: list[str]) -> None:
        found = await self.cli.squeue(job_ids)
        missing = [j for j in job_ids if j not in found]
        if missing and self.clock() >= self._sacct_disabled_until:
            try:
                found.update(await self.cli.sacct(missing))
            except (TimeoutError, SlurmCommandError) as e:
                self._sacct_disabled_until = self.clock() + SACCT_RETRY_SECONDS
                log.warning("sacct failed (finished jobs are then judged by their files only): %s", e)
        now = self.clock()
        for j in job_ids:
            info = found.get(j)
            self._cache[j] = (now, info)
            if info is not None and is_final(info):
                self._final[j] = info
                self._cache.pop(j, None)
                if self.on_final is not None:
                    self.on_final(info)

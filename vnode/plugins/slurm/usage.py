"""What a pod's SLURM job consumes, for the plugin API's usage extension (plugin_client/USAGE.md).

Two sources, each honest about what it measures:

* **Per container**: job.sh runs a sampler (script.SAMPLER_PY) that walks /proc every
  UsageSampleSeconds and writes `usage.json` in the pod directory: per container the CPU time of its
  whole process tree and the sum of its resident memory, with the sampling time. SLURM cannot tell the
  containers of a pod apart (they all run in the job's batch step), so this is the only source of
  per-container figures. A container that ended keeps the CPU of its last sample, with no memory.
* **Per pod (the whole job)**: one `sstat` call for every running job (all steps: the batch step with
  the containers, job.sh and its log filters, plus `srun` steps such as kubectl exec), cached for
  UsageCacheSeconds; the final CPU of finished jobs from one `sacct` call, kept for good.

The job contains every container, so the pod's figures are never below the containers' sum: sstat's
are jobacct_gather's last poll (JobAcctGatherFrequency, whole seconds of CPU) and may lag the
sampler's, so the larger is reported. A job's final CPU is never below the last figure seen while it
ran (sacct misses processes that were killed rather than reaped), so the pod's counter never goes back.

Without samples (no python3 on the node, UsageSampleSeconds 0, or a job from the Go plugin) a pod with
a single container gets the job's figures as that container's, which is what the kubelet would show
for it plus the job script's small overhead; a pod with several containers gets pod figures only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeGuard

from plugin_client.usage import ContainerUsage, PodUsage

from .parsers import JobUsage
from .slurm_cli import SlurmCli, SlurmCommandError
from .status import ContainerFiles, SpecContainer

log = logging.getLogger(__name__)

USAGE_FILE = "usage.json"
SACCT_RETRY_SECONDS = 60.0  # a job sacct does not know yet (slurmdbd lags) is asked again this much later
SSTAT_RETRY_SECONDS = 60.0  # after sstat failed (not installed, no jobacct_gather), try again this much later


@dataclass(frozen=True)
class ContainerSample:
    """One container's figures from usage.json."""

    cpu_ns: int
    rss_bytes: int
    rate_nano_cores: int | None
    time: datetime


def parse_samples(text: str) -> dict[str, ContainerSample]:
    """usage.json → {"<kind>-<name>": sample}; malformed entries are skipped (the file is the job's,
    and a broken one must not fail a scrape)."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    containers = document.get("containers") if isinstance(document, dict) else None
    if not isinstance(containers, dict):
        return {}
    out: dict[str, ContainerSample] = {}
    for key, entry in containers.items():
        if not isinstance(entry, dict):
            continue
        cpu, rss, rate, moment = entry.get("cpu_ns"), entry.get("rss"), entry.get("rate"), entry.get("time")
        if not (_count(cpu) and _count(rss)):
            continue
        if not isinstance(moment, int | float) or isinstance(moment, bool):
            continue
        out[str(key)] = ContainerSample(cpu, rss, rate if _count(rate) else None, datetime.fromtimestamp(moment, UTC))
    return out


def _count(value: object) -> TypeGuard[int]:
    """A non-negative JSON integer (bool is an int to Python, not to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_samples(pod_dir: Path) -> dict[str, ContainerSample]:
    """Blocking: the pod's usage.json ({} when there is none yet)."""
    try:
        return parse_samples((pod_dir / USAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def pod_usage(uid: str, name: str, namespace: str, containers: Sequence[SpecContainer],
              files: Mapping[str, ContainerFiles], samples: Mapping[str, ContainerSample],
              job: JobUsage | None, job_time: datetime | None) -> PodUsage | None:
    """The PodUsage of one pod (pure). None when nothing was measured yet."""
    measured: list[ContainerUsage] = []
    for c in containers:
        sample = samples.get(f"{c.kind}-{c.name}")
        state = files.get(c.name, ContainerFiles())
        if sample is not None:
            # A container that ended keeps its CPU total; nothing of it is resident any more.
            ended = state.finished is not None
            measured.append(ContainerUsage(c.name, sample.cpu_ns, 0 if ended else sample.rss_bytes, start_time=state.started,
                                           timestamp=state.finished if ended else sample.time,
                                           cpu_usage_nano_cores=0 if ended else sample.rate_nano_cores))
    if not measured and job is not None and len(containers) == 1:
        only = containers[0]
        started = files.get(only.name, ContainerFiles()).started
        measured.append(ContainerUsage(only.name, job.cpu_ns, job.memory_bytes, start_time=started, timestamp=job_time))
    if not measured and job is None:
        return None
    times = [m.timestamp for m in measured if m.timestamp is not None]
    return PodUsage(
        uid=uid, name=name, namespace=namespace,
        timestamp=max([*times, job_time] if job_time is not None else times, default=None),
        containers=tuple(measured),
        cpu_usage_core_nanoseconds=None if job is None else max(job.cpu_ns, sum(m.cpu_usage_core_nanoseconds for m in measured)),
        memory_working_set_bytes=None if job is None else max(job.memory_bytes, sum(m.memory_working_set_bytes for m in measured)),
    )


class JobUsageCache:
    """Job-level figures: one sstat for every running job asked about (refreshed at most every
    `ttl` seconds, concurrent callers sharing one refresh), and sacct's final CPU of finished jobs."""

    def __init__(self, cli: SlurmCli, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cli = cli
        self.ttl = ttl
        self.clock = clock
        self._running: dict[str, JobUsage] = {}
        self._running_at = -float("inf")
        self._running_time: datetime | None = None
        self._running_ids: frozenset[str] = frozenset()
        self._last_seen_cpu: dict[str, int] = {}  # per job, the last running figure: finals never go below it
        self._final: dict[str, JobUsage] = {}
        self._final_time: dict[str, datetime] = {}
        self._sacct_asked: dict[str, float] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._sstat_disabled_until = -float("inf")

    def forget(self, job_id: str) -> None:
        self._last_seen_cpu.pop(job_id, None)
        self._final.pop(job_id, None)
        self._final_time.pop(job_id, None)
        self._sacct_asked.pop(job_id, None)

    async def get(self, running: Iterable[str], finished: Iterable[str]) -> dict[str, tuple[JobUsage, datetime]]:
        """Figures per job id with the time they stand for; jobs SLURM has nothing on are left out."""
        running_ids = frozenset(running)
        final_ids = [j for j in finished if j not in self._final]
        if self._refresh is not None and not self._refresh.done():
            await asyncio.shield(self._refresh)
        stale = ((self.clock() - self._running_at > self.ttl or not running_ids <= self._running_ids)
                 and self.clock() >= self._sstat_disabled_until)
        wanted_final = [j for j in final_ids if self.clock() - self._sacct_asked.get(j, -float("inf")) > SACCT_RETRY_SECONDS]
        if (running_ids and stale) or wanted_final:
            self._refresh = asyncio.ensure_future(self._do_refresh(running_ids if stale else frozenset(), wanted_final))
            await asyncio.shield(self._refresh)
        out: dict[str, tuple[JobUsage, datetime]] = {}
        for j in running_ids:
            if j in self._running and self._running_time is not None:
                out[j] = (self._running[j], self._running_time)
        for j in finished:
            if j in self._final:
                out[j] = (self._final[j], self._final_time[j])
        return out

    async def _do_refresh(self, running: frozenset[str], finished: list[str]) -> None:
        if running:
            try:
                found = await self.cli.sstat(sorted(running))
            except (TimeoutError, SlurmCommandError) as e:
                self._sstat_disabled_until = self.clock() + SSTAT_RETRY_SECONDS
                log.warning("sstat failed (no job-level usage for %.0fs; containers still report theirs): %s",
                            SSTAT_RETRY_SECONDS, e)
                found = {}
            self._running, self._running_ids = found, running
            for j, figures in found.items():
                self._last_seen_cpu[j] = max(self._last_seen_cpu.get(j, 0), figures.cpu_ns)
            self._running_at, self._running_time = self.clock(), datetime.now(UTC)
        if finished:
            now = self.clock()
            for j in finished:
                self._sacct_asked[j] = now
            try:
                finals = await self.cli.sacct_usage(finished)
            except (TimeoutError, SlurmCommandError) as e:
                log.warning("sacct failed (finished pods get no final usage this time): %s", e)
                finals = {}
            stamp = datetime.now(UTC)
            for j, figures in finals.items():
                self._final[j] = JobUsage(j, max(figures.cpu_ns, self._last_seen_cpu.get(j, 0)), 0, figures.source)
                self._final_time[j] = stamp


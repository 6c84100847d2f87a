"""The one module that spawns SLURM commands (sbatch, squeue, sacct, sstat, scancel, sinfo, srun).

Commands are asyncio subprocesses with argv lists; the configured paths may be prefixes
(`ssh login sbatch`), already split at config load. Output on stderr is a warning, never a failure
by itself; a non-zero exit is a failure and its stderr becomes the error message. Every invocation
is counted per command, for tests and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .config import SlurmConfig
from .parsers import (
    SACCT_FIELDS,
    SACCT_USAGE_FIELDS,
    SINFO_FORMAT,
    SQUEUE_FIELDS,
    SSTAT_FIELDS,
    JobInfo,
    JobUsage,
    NodeInfo,
    parse_sacct,
    parse_sacct_usage,
    parse_sbatch,
    parse_sinfo,
    parse_squeue,
    parse_sstat,
)

log = logging.getLogger(__name__)
# Each command is a CLIENT span, a child of the plugin API request that caused it (no-op without
# tracing: plugin_client.tracing).
_tracer = trace.get_tracer(__name__)

# scancel's complaints that mean "nothing left to cancel".
_ALREADY_GONE = ("Invalid job id specified", "already completing or completed", "Job/step already completing")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class SlurmCommandError(Exception):
    """A SLURM command failed (non-zero exit, timeout, or could not start)."""

    def __init__(self, argv: Sequence[str], message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


def _first_lines(text: str, limit: int = 600) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class SlurmCli:
    def __init__(self, config: SlurmConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(env) if env is not None else None
        self.calls: Counter[str] = Counter()  # command name → invocations
        self.failures: Counter[str] = Counter()
        # Called once per command with (name, outcome, seconds): metrics. outcome: ok, error, timeout,
        # cancelled, not_started.
        self.observer: Callable[[str, str, float], None] | None = None

    async def run(self, name: str, prefix: Sequence[str], args: Iterable[str], *, check: bool = True,
                  timeout: float | None = None) -> CommandResult:
        argv = (*prefix, *args)
        self.calls[name] += 1
        started = time.monotonic()
        outcome = "not_started"
        span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes={
            "vnode.slurm.command": name, "process.executable.path": argv[0], "process.command_args": _shown(argv)})
        try:
            with trace.use_span(span, end_on_exit=False):
                result = await self._run(name, argv, check, timeout)
            outcome = "ok" if result.returncode == 0 else "error"
            span.set_attribute("process.exit.code", result.returncode)
            return result
        except SlurmCommandError as e:
            outcome = "not_started" if e.returncode is None else "error"
            raise
        except TimeoutError:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.set_attribute("vnode.slurm.outcome", outcome)
            span.end()
            if self.observer is not None:
                self.observer(name, outcome, time.monotonic() - started)

    async def _run(self, name: str, argv: tuple[str, ...], check: bool, timeout: float | None) -> CommandResult:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env)
        except OSError as e:
            self.failures[name] += 1
            raise SlurmCommandError(argv, f"{name}: cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout or self.config.command_timeout_seconds)
        except BaseException:  # timeout or cancellation: never leave the child behind
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            self.failures[name] += 1
            raise
        result = CommandResult(argv, proc.returncode or 0, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - started)
        if result.stderr.strip():
            # scancel of a finished job and sstat of a job that just ended complain harmlessly.
            (log.debug if name in ("scancel", "sstat") else log.warning)("%s wrote to stderr (exit %s): %s", name, result.returncode, _first_lines(result.stderr))
        if check and result.returncode != 0:
            self.failures[name] += 1
            raise SlurmCommandError(argv, f"{name} exited {result.returncode}: {_first_lines(result.stderr or result.stdout) or 'no message'}",
                                    result.returncode, result.stderr)
        return result

    async def sbatch(self, script: str) -> str:
        """Submit `script`; returns the job id."""
        result = await self.run("sbatch", self.config.sbatch, ["--parsable", script])
        return parse_sbatch(result.stdout)

    async def scancel(self, job_id: str) -> bool:
        """Cancel the job; False when SLURM no longer knows it (already finished or purged)."""
        result = await self.run("scancel", self.config.scancel, ["--verbose", job_id], check=False)
        if result.returncode != 0 or "error" in result.stderr.lower():
            if any(marker in result.stderr for marker in _ALREADY_GONE):
                return False
            if result.returncode != 0:
                self.failures["scancel"] += 1
                raise SlurmCommandError(result.argv, f"scancel exited {result.returncode}: {_first_lines(result.stderr) or 'no message'}",
                                        result.returncode, result.stderr)
        return True

    async def squeue(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """The jobs slurmctld still knows, in batches of SqueueBatchSize ids per call."""
        out: dict[str, JobInfo] = {}
        for chunk in _chunks(job_ids, self.config.squeue_batch_size):
            result = await self.run("squeue", self.config.squeue,
                                    ["--noheader", "--states=all", "-j", ",".join(chunk), "-O", SQUEUE_FIELDS],
                                    check=False)
            if result.returncode != 0 and "Invalid job id" not in result.stderr:
                self.failures["squeue"] += 1
                raise SlurmCommandError(result.argv, f"squeue exited {result.returncode}: {_first_lines(result.stderr) or 'no message'}",
                                        result.returncode, result.stderr)
            out.update(parse_squeue(result.stdout))
        return out

    async def sacct(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Accounting records of jobs that left the queue (needs slurmdbd)."""
        out: dict[str, JobInfo] = {}
        for chunk in _chunks(job_ids, self.config.squeue_batch_size):
            result = await self.run("sacct", self.config.sacct,
                                    ["--noheader", "--parsable2", "-X", "-j", ",".join(chunk), "-o", SACCT_FIELDS])
            out.update(parse_sacct(result.stdout))
        return out

    async def sstat(self, job_ids: Sequence[str]) -> dict[str, JobUsage]:
        """Current usage of running jobs, all their steps (one call per SqueueBatchSize ids). Jobs
        without running steps are left out: sstat names them on stderr and still exits 0."""
        out: dict[str, JobUsage] = {}
        for chunk in _chunks(job_ids, self.config.squeue_batch_size):
            result = await self.run("sstat", self.config.sstat,
                                    ["-a", "--noconvert", "--noheader", "--parsable2", "-j", ",".join(chunk),
                                     "-o", SSTAT_FIELDS])
            out.update(parse_sstat(result.stdout))
        return out

    async def sacct_usage(self, job_ids: Sequence[str]) -> dict[str, JobUsage]:
        """Final CPU of finished jobs from accounting."""
        out: dict[str, JobUsage] = {}
        for chunk in _chunks(job_ids, self.config.squeue_batch_size):
            result = await self.run("sacct", self.config.sacct,
                                    ["--noconvert", "--noheader", "--parsable2", "-j", ",".join(chunk),
                                     "-o", SACCT_USAGE_FIELDS])
            out.update(parse_sacct_usage(result.stdout))
        return out

    async def sinfo(self) -> list[NodeInfo]:
        result = await self.run("sinfo", self.config.sinfo, ["-N", "--noheader", "-o", SINFO_FORMAT])
        return parse_sinfo(result.stdout)

    async def sinfo_summary(self) -> str:
        result = await self.run("sinfo", self.config.sinfo, ["-s"])
        return result.stdout

    async def resource_script(self, path: str) -> str:
        """The site's capacity script (ResourceScriptPath): prints a PingResponse as JSON."""
        result = await self.run("resource-script", (path,), [])
        return result.stdout

    async def srun(self, args: Sequence[str], *, stdin: int | None, stdout: int | None, stderr: int | None,
                   env: Mapping[str, str] | None = None, start_new_session: bool = True) -> asyncio.subprocess.Process:
        """Start `srun ARGS` with the given stdio (pipes or a pty's fds); the caller owns the process."""
        argv = (*self.config.srun, *args)
        self.calls["srun"] += 1
        full_env = {**(self.env if self.env is not None else os.environ), **(env or {})}
        try:
            return await asyncio.create_subprocess_exec(*argv, stdin=stdin, stdout=stdout, stderr=stderr, env=full_env,
                                                        start_new_session=start_new_session)
        except OSError as e:
            self.failures["srun"] += 1
            raise SlurmCommandError(argv, f"srun: cannot run {argv[0]}: {e.strerror or e}") from None


def _shown(argv: Sequence[str], limit: int = 24) -> list[str]:
    """The argv for a span, cut after `limit` words (a squeue of 500 job ids is one long word anyway)."""
    words = [w if len(w) <= 512 else w[:511] + "…" for w in argv[:limit]]
    return words + (["…"] if len(argv) > limit else [])


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]

"""Parsers of SLURM command output (sbatch, squeue, sacct, sstat, sinfo), and the argv that asks for it.
Pure: tested against output recorded from the testbed's SLURM 22.05.

Times from squeue/sacct are the login node's local time without a zone ("2026-11-25T20:41:45");
they are read as local time and returned in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .states import JobState, job_state

# squeue -O: fields separated by '|' (the ':|' suffix, no width limit). exit_code is the raw wait
# status (768 = exit 3, 15 = killed by signal 15).
SQUEUE_FIELDS = "JobID:|,State:|,Reason:|,exit_code:|,StartTime:|,EndTime:|,NodeList:|"
SACCT_FIELDS = "JobID,State,ExitCode,Start,End,Reason,NodeList"
SINFO_FORMAT = "%N|%c|%m|%G|%T"
# Usage (with --noconvert: memory in bytes). sstat's TRESUsageInTot is the sum over a step's tasks of
# the last jobacct_gather sample: `cpu=` cumulative CPU time (whole seconds), `mem=` resident memory now.
# sacct's TotalCPU of the job line is the CPU SLURM collected from the steps' reaped processes (ms
# resolution); the steps' TRESUsageInTot cpu= is jobacct_gather's last poll. Neither is complete on its own
# (processes killed with a PID namespace are never reaped into TotalCPU), so the larger one is taken.
SSTAT_FIELDS = "JobID,TRESUsageInTot"
SACCT_USAGE_FIELDS = "JobID,TotalCPU,TRESUsageInTot"

_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
_PARSABLE = re.compile(r"^(\d+)(?:;\S+)?$")


class ParseError(ValueError):
    """Output that does not have the expected shape; the message quotes it."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: JobState
    reason: str = ""  # SLURM's pending/finish reason (Resources, Priority, NonZeroExitCode, ...)
    exit_code: int | None = None
    signal: int = 0
    start: datetime | None = None
    end: datetime | None = None
    node: str = ""
    source: str = ""  # squeue or sacct


@dataclass(frozen=True)
class JobUsage:
    """A job's whole CPU time (core-nanoseconds) and resident memory (bytes), summed over its steps."""

    job_id: str
    cpu_ns: int
    memory_bytes: int
    source: str  # sstat (running) or sacct (final)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpus: int
    memory_mib: int
    gpus: int
    state: str


def parse_sbatch(stdout: str) -> str:
    """The job id from `Submitted batch job N` or `--parsable` output (`N` or `N;cluster`)."""
    m = _SUBMITTED.search(stdout)
    if m:
        return m.group(1)
    for line in stdout.splitlines():
        m = _PARSABLE.match(line.strip())
        if m:
            return m.group(1)
    raise ParseError(f"no job id in sbatch output {stdout.strip()[:200]!r}")


def parse_slurm_time(text: str) -> datetime | None:
    t = text.strip()
    if not t or t.upper() in ("NONE", "N/A", "UNKNOWN", "INVALID", "0"):
        return None
    try:
        moment = datetime.fromisoformat(t)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time of this host, as SLURM prints it
    return moment.astimezone(UTC)


def _wait_status(raw: str) -> tuple[int | None, int]:
    """squeue's exit_code: a raw wait status."""
    t = raw.strip()
    if not t.isdigit():
        return None, 0
    status = int(t)
    if status & 0x7F:
        return 128 + (status & 0x7F), status & 0x7F
    return (status >> 8) & 0xFF, 0


def _code_signal(raw: str) -> tuple[int | None, int]:
    """sacct's ExitCode `code:signal`."""
    code, _, sig = raw.strip().partition(":")
    if not code.isdigit():
        return None, 0
    signal = int(sig) if sig.isdigit() else 0
    return (128 + signal if signal and int(code) == 0 else int(code)), signal


def parse_squeue(stdout: str) -> dict[str, JobInfo]:
    """Rows of `squeue --noheader -O SQUEUE_FIELDS`; lines that are not rows are skipped."""
    out: dict[str, JobInfo] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 7 or not parts[0].strip():
            continue
        job_id = parts[0].strip()
        code, signal = _wait_status(parts[3])
        out[job_id] = JobInfo(job_id, job_state(parts[1]), parts[2].strip(), code, signal,
                              parse_slurm_time(parts[4]), parse_slurm_time(parts[5]), parts[6].strip(), "squeue")
    return out


def parse_sacct(stdout: str) -> dict[str, JobInfo]:
    """Rows of `sacct --parsable2 --noheader -X -o SACCT_FIELDS`; the last row of a job wins."""
    out: dict[str, JobInfo] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 7 or not parts[0].strip() or "." in parts[0]:
            continue
        job_id = parts[0].strip()
        code, signal = _code_signal(parts[2])
        out[job_id] = JobInfo(job_id, job_state(parts[1]), parts[5].strip(), code, signal,
                              parse_slurm_time(parts[3]), parse_slurm_time(parts[4]), parts[6].strip(), "sacct")
    return out


_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.(\d+))?$")


def parse_duration_ns(text: str) -> int | None:
    """SLURM's elapsed-time notation in nanoseconds: `[D-][HH:]MM:SS[.mmm]` (sacct's TotalCPU is
    `MM:SS.mmm` below an hour, TRES cpu is `HH:MM:SS`); None for anything else."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds, fraction = m.groups()
    whole = ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + int(seconds)
    return whole * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def tres_values(text: str) -> dict[str, str]:
    """`cpu=00:00:05,mem=293015552,...` → {"cpu": "00:00:05", "mem": "293015552", ...}."""
    out: dict[str, str] = {}
    for item in text.strip().split(","):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_sstat(stdout: str) -> dict[str, JobUsage]:
    """Rows of `sstat -a --noconvert --parsable2 --noheader -o SSTAT_FIELDS`, one per running step
    (`123.batch`, `123.0`, `123.extern`), summed per job. Rows without usable figures are skipped."""
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            continue
        job_id = parts[0].strip().split(".", 1)[0]
        values = tres_values(parts[1])
        step_cpu = parse_duration_ns(values.get("cpu", ""))
        step_mem = values.get("mem", "")
        if step_cpu is None or not step_mem.isdigit():
            continue
        cpu[job_id] = cpu.get(job_id, 0) + step_cpu
        mem[job_id] = mem.get(job_id, 0) + int(step_mem)
    return {j: JobUsage(j, cpu[j], mem[j], "sstat") for j in cpu}


def parse_sacct_usage(stdout: str) -> dict[str, JobUsage]:
    """Rows of `sacct --noconvert --parsable2 --noheader -o SACCT_USAGE_FIELDS`: the final CPU of
    finished jobs, the larger of the job line's TotalCPU and the sum of its steps' TRES cpu; nothing is
    resident any more."""
    total: dict[str, int] = {}
    steps: dict[str, int] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0].strip():
            continue
        job_id, _, step = parts[0].strip().partition(".")
        if not step:
            cpu = parse_duration_ns(parts[1])
            if cpu is not None:
                total[job_id] = cpu
            continue
        cpu = parse_duration_ns(tres_values(parts[2]).get("cpu", ""))
        if cpu is not None:
            steps[job_id] = steps.get(job_id, 0) + cpu
    return {j: JobUsage(j, max(total[j], steps.get(j, 0)), 0, "sacct") for j in total}


_GRES_GPU = re.compile(r"^gpu(?::[^:(]+)?:(\d+)")


def gres_gpus(gres: str) -> int:
    """`gpu:a100:4(S:0-1),gpu:2,nic:1` → 6; `(null)` → 0."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres.strip()):
        m = _GRES_GPU.match(entry.strip())
        if m:
            total += int(m.group(1))
    return total


# Nodes in these states take no new work; their capacity is not offered.
UNUSABLE = ("down", "drain", "drained", "draining", "fail", "failing", "future", "unknown", "not_responding", "inval", "maint", "power_down", "powered_down")


def parse_sinfo(stdout: str) -> list[NodeInfo]:
    """Rows of `sinfo -N --noheader -o SINFO_FORMAT`, one per node (a node listed in several
    partitions is counted once)."""
    nodes: dict[str, NodeInfo] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[0].strip():
            continue
        name = parts[0].strip()
        try:
            cpus, mem = int(parts[1].strip().rstrip("+")), int(parts[2].strip().rstrip("+"))
        except ValueError:
            raise ParseError(f"unexpected sinfo line {line!r}") from None
        nodes[name] = NodeInfo(name, cpus, mem, gres_gpus(parts[3]), parts[4].strip().rstrip("*~#!%$@^-").lower())
    return list(nodes.values())


def usable(node: NodeInfo) -> bool:
    return not any(word in UNUSABLE for word in node.state.replace("+", " ").split())

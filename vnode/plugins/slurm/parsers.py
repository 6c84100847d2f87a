"""Parsers of SLURM command output (sbatch, squeue, sacct, sinfo), and the argv that asks for it.
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

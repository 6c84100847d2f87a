"""SLURM job states → what they mean for a pod's containers, through one explicit table.

Every state squeue and sacct print (long names, and the compact codes for robustness) is listed;
anything else is logged as a warning once and treated as still pending, so an unknown state from a
newer SLURM never ends a pod by accident. Pure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)


class Phase(Enum):
    PENDING = "pending"  # not started (or waiting to start again); containers wait
    RUNNING = "running"  # the job runs; containers report their own files
    FINISHED = "finished"  # the job is over for good


# Container reasons (Kubernetes' own words where they exist).
COMPLETED, ERROR, OOM_KILLED, DEADLINE_EXCEEDED = "Completed", "Error", "OOMKilled", "DeadlineExceeded"


@dataclass(frozen=True)
class JobState:
    name: str
    phase: Phase
    reason: str = ""  # for containers terminated because the job ended this way
    message: str = ""


_TABLE: tuple[tuple[str, str, Phase, str, str], ...] = (
    # long name, compact code, phase, container reason, message
    ("PENDING", "PD", Phase.PENDING, "", "queued in SLURM"),
    ("CONFIGURING", "CF", Phase.PENDING, "", "SLURM is configuring the job's nodes"),
    ("RESV_DEL_HOLD", "RD", Phase.PENDING, "", "held: its reservation was deleted"),
    ("REQUEUE_FED", "RF", Phase.PENDING, "", "requeued by the federation"),
    ("REQUEUE_HOLD", "RH", Phase.PENDING, "", "requeued and held"),
    ("REQUEUED", "RQ", Phase.PENDING, "", "requeued"),
    ("RUNNING", "R", Phase.RUNNING, "", ""),
    ("COMPLETING", "CG", Phase.RUNNING, "", "the job is completing"),
    ("RESIZING", "RS", Phase.RUNNING, "", "the job is being resized"),
    ("SIGNALING", "SI", Phase.RUNNING, "", "the job is being signaled"),
    ("STAGE_OUT", "SO", Phase.RUNNING, "", "staging out data"),
    ("STOPPED", "ST", Phase.RUNNING, "", "stopped (SIGSTOP), resources kept"),
    ("SUSPENDED", "S", Phase.RUNNING, "", "suspended"),
    ("COMPLETED", "CD", Phase.FINISHED, COMPLETED, ""),
    ("FAILED", "F", Phase.FINISHED, ERROR, "the SLURM job failed"),
    ("CANCELLED", "CA", Phase.FINISHED, ERROR, "the SLURM job was cancelled"),
    ("TIMEOUT", "TO", Phase.FINISHED, DEADLINE_EXCEEDED, "the SLURM job reached its time limit"),
    ("DEADLINE", "DL", Phase.FINISHED, DEADLINE_EXCEEDED, "the SLURM job reached its deadline"),
    ("OUT_OF_MEMORY", "OOM", Phase.FINISHED, OOM_KILLED, "the SLURM job ran out of memory"),
    ("NODE_FAIL", "NF", Phase.FINISHED, ERROR, "the SLURM job's node failed"),
    ("BOOT_FAIL", "BF", Phase.FINISHED, ERROR, "the SLURM job's node failed to boot"),
    ("PREEMPTED", "PR", Phase.FINISHED, ERROR, "the SLURM job was preempted"),
    ("REVOKED", "RV", Phase.FINISHED, ERROR, "the SLURM job was revoked (it runs on another cluster)"),
    ("SPECIAL_EXIT", "SE", Phase.FINISHED, ERROR, "the SLURM job ended with a special exit state"),
)

STATES: dict[str, JobState] = {}
for _name, _code, _phase, _reason, _message in _TABLE:
    STATES[_name] = STATES[_code] = JobState(_name, _phase, _reason, _message)

_warned: set[str] = set()


def job_state(text: str) -> JobState:
    """`RUNNING`, `R`, `CANCELLED by 1000`, `CANCELLED+` → JobState. Unknown → pending + warning."""
    word = text.strip().split(" ", 1)[0].rstrip("+").upper()
    state = STATES.get(word)
    if state is None:
        if word not in _warned:
            _warned.add(word)
            log.warning("unknown SLURM job state %r: treated as pending", text)
        return JobState(word or "UNKNOWN", Phase.PENDING, "", f"unknown SLURM state {word or text!r}")
    return state

"""A pod's PodStatus from its SLURM job state and the per-container files job.sh writes.

Per container (init containers too) the job writes `<kind>-<name>.started`, `.finished` and
`.status` (the Go plugin's exit-code file). The rules, in order:
* `.status` exists → terminated with that exit code; reason Completed for 0, else the job's reason
  when the job ended by time limit/OOM (DeadlineExceeded, OOMKilled), else Error;
* started but no status → running while the job runs; terminated (with the job's reason) when the
  job is over, since the container cannot run any more;
* not started → waiting (ContainerCreating while the job is queued, PodInitializing behind init
  containers); terminated once the job is over, so the pod can fail instead of pending forever.
`read_files` does the (blocking) reading; `pod_status` is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin_client.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    PodStatus,
)

from .parsers import JobInfo
from .states import COMPLETED, ERROR, Phase

CONTAINER_CREATING, POD_INITIALIZING = "ContainerCreating", "PodInitializing"
UNKNOWN_EXIT = 137  # the kubelet's code for a container whose end it did not see (ContainerStatusUnknown)
NOT_FOUND_REASON = "ContainerStatusUnknown"


@dataclass(frozen=True)
class SpecContainer:
    name: str
    image: str
    init: bool

    @property
    def kind(self) -> str:
        return "init" if self.init else "run"


@dataclass(frozen=True)
class ContainerFiles:
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    # A job written by the Go plugin records no start: while SLURM runs it, its containers are
    # taken as running since the job started (what the Go plugin reported).
    legacy: bool = False


def spec_containers(pod: Mapping[str, Any]) -> list[SpecContainer]:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    out: list[SpecContainer] = []
    for key, init in (("initContainers", True), ("containers", False)):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                out.append(SpecContainer(str(c.get("name", "")), str(c.get("image", "")), init))
    return out


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time as job.sh writes it (`date -u +%Y-%m-%dT%H:%M:%S.%NZ`); nanoseconds are
    cut to microseconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_time(path: Path) -> datetime | None:
    try:
        return parse_time(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def read_files(pod_dir: Path, containers: Sequence[SpecContainer]) -> tuple[dict[str, ContainerFiles], str]:
    """Blocking: the state files of each container, and `job.error` (a failed volume setup)."""
    out: dict[str, ContainerFiles] = {}
    legacy = not (pod_dir / "pod.json").exists()
    for c in containers:
        base = pod_dir / f"{c.kind}-{c.name}"
        code: int | None = None
        try:
            text = (pod_dir / f"{c.kind}-{c.name}.status").read_text().strip()
            code = int(text) if text.lstrip("-").isdigit() else None
        except (OSError, UnicodeDecodeError):
            pass
        out[c.name] = ContainerFiles(_read_time(Path(f"{base}.started")), _read_time(Path(f"{base}.finished")), code,
                                     legacy=legacy)
    try:
        error = (pod_dir / "job.error").read_text(errors="replace").strip()
    except OSError:
        error = ""
    return out, error


def _terminated(c: SpecContainer, exit_code: int, reason: str, message: str,
                started: datetime | None, finished: datetime | None) -> ContainerStatus:
    state = ContainerState(terminated=ContainerStateTerminated(
        exit_code=exit_code, reason=reason, message=message, started_at=started, finished_at=finished or started))
    return ContainerStatus(name=c.name, state=state, image=c.image, started=False)


def _waiting(c: SpecContainer, reason: str, message: str) -> ContainerStatus:
    return ContainerStatus(name=c.name, state=ContainerState(waiting=ContainerStateWaiting(reason, message)),
                           image=c.image, started=False)


def container_status(c: SpecContainer, files: ContainerFiles, job_id: str, info: JobInfo | None,
                     inits_done: bool, job_error: str) -> ContainerStatus:
    phase = info.state.phase if info is not None else Phase.FINISHED
    job_reason = info.state.reason if info is not None else ERROR
    job_message = info.state.message if info is not None else f"SLURM no longer knows job {job_id}"
    if info is not None and info.reason and info.reason not in ("None", "NonZeroExitCode") and phase is not Phase.RUNNING:
        job_message = f"{job_message} ({info.reason})" if job_message else info.reason
    if files.exit_code is not None:
        code = files.exit_code
        if code == 0:
            reason, message = COMPLETED, ""
        elif phase is Phase.FINISHED and job_reason not in (COMPLETED, ERROR, ""):
            reason, message = job_reason, job_message  # killed by the time limit or the OOM killer
        elif phase is Phase.FINISHED and info is not None and info.state.name not in ("COMPLETED", "FAILED"):
            reason, message = ERROR, job_message  # e.g. cancelled: say so
        else:
            reason, message = ERROR, ""
        return _terminated(c, code, reason, message, files.started or (info.start if info else None), files.finished)
    if phase is Phase.FINISHED:
        code = info.exit_code if info is not None and info.exit_code else UNKNOWN_EXIT
        reason = job_reason if job_reason not in (COMPLETED, "") else ERROR
        what = "ended before its exit code was recorded" if files.started else "never started"
        message = f"container {what}: {job_error or job_message or 'the SLURM job is over'}"
        end = (info.end if info is not None else None) or files.started
        return _terminated(c, code, reason, message, files.started or (info.start if info else None), end)
    started = files.started or (info.start if files.legacy and info is not None and not c.init else None)
    if started is not None and phase is Phase.RUNNING:
        return ContainerStatus(name=c.name, state=ContainerState(running=ContainerStateRunning(started)),
                               ready=True, image=c.image, started=True)
    if phase is Phase.PENDING:
        why = info.reason if info is not None and info.reason not in ("", "None") else ""
        message = f"SLURM job {job_id} is {info.state.name.lower() if info else 'pending'}" + (f": {why}" if why else "")
        return _waiting(c, CONTAINER_CREATING, message)
    # the job runs but this container has not started yet
    if c.init or not inits_done:
        return _waiting(c, POD_INITIALIZING, "")
    return _waiting(c, CONTAINER_CREATING, f"SLURM job {job_id} is starting the container")


def _split(name: str, namespace: str, uid: str, job_id: str, containers: Sequence[SpecContainer],
           statuses: Sequence[ContainerStatus]) -> PodStatus:
    """The PodStatus of `statuses`, one per spec container (init containers first)."""
    pairs = list(zip(containers, statuses, strict=True))
    return PodStatus(name=name, uid=uid, namespace=namespace, jid=job_id,
                     containers=tuple(s for c, s in pairs if not c.init),
                     init_containers=tuple(s for c, s in pairs if c.init))


def pod_status(name: str, namespace: str, uid: str, containers: Sequence[SpecContainer], job_id: str,
               info: JobInfo | None, files: Mapping[str, ContainerFiles], job_error: str) -> PodStatus:
    inits = [c for c in containers if c.init]
    inits_done = all(files.get(c.name, ContainerFiles()).exit_code == 0 for c in inits)
    statuses = [container_status(c, files.get(c.name, ContainerFiles()), job_id, info, inits_done, job_error)
                for c in containers]
    return _split(name, namespace, uid, job_id, containers, statuses)


def creating_status(name: str, namespace: str, uid: str, containers: Sequence[SpecContainer]) -> PodStatus:
    """A pod whose create is still running (sbatch not answered yet)."""
    statuses = [_waiting(c, CONTAINER_CREATING, "submitting the SLURM job") for c in containers]
    return _split(name, namespace, uid, "", containers, statuses)


def unknown_status(name: str, namespace: str, uid: str, containers: Sequence[SpecContainer]) -> PodStatus:
    """A pod this plugin has no job for (never created here, or its directory is gone): reported
    the way the kubelet reports containers it lost, so the pod fails instead of hanging."""
    statuses = [_terminated(c, UNKNOWN_EXIT, NOT_FOUND_REASON, "the SLURM plugin has no job for this pod", None, None)
                for c in containers]
    return _split(name, namespace, uid, "", containers, statuses)

"""The SLURM plugin backend: what `plugin_client.server` serves on /create, /delete, /status (and
the ping), /getLogs, /exec, /usage and /system-info.

Concurrency: creates and deletes of one pod hold that pod's lock, so a delete that races a create
waits for the job id and cancels it (and a delete that comes first makes the create refuse);
different pods proceed in parallel. Status answers come from one batched, cached squeue/sacct
(`poller`). Every blocking file operation runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.trace import get_current_span

from plugin_client.errors import (
    PermanentPluginError,
    PodNotFound,
    TransientPluginError,
    WireFormatError,
)
from plugin_client.logformat import pod_fields
from plugin_client.models import (
    Accelerator,
    CreateStruct,
    ExecRequest,
    KubeObject,
    LogStruct,
    PingResources,
    PingResponse,
    PodStatus,
    RetrievedPodData,
    Taint,
)
from plugin_client.server import ServerExecSession
from plugin_client.usage import PodUsage

from . import store as disk
from .config import SlurmConfig
from .directives import DirectiveError, build_directives
from .exec import run_exec
from .logs import files_for, follow, stream_snapshot
from .parsers import JobInfo, ParseError, usable
from .podspec import Pod, PodSpecError, parse_pod
from .poller import JobPoller, info_from_json, info_to_json, is_final
from .runtime import singularity_argv
from .script import JobFiles, build_job
from .slurm_cli import SlurmCli, SlurmCommandError
from .states import Phase
from .status import (
    ContainerFiles,
    SpecContainer,
    creating_status,
    pod_status,
    read_files,
    spec_containers,
    unknown_status,
)
from .store import PodRecord, PodStore
from .usage import JobUsageCache, pod_usage, read_samples
from .volumes import collect_volume_data, plan_volumes

log = logging.getLogger(__name__)

EXEC_FILE = "vnode-exec.json"  # per container: the runtime argv up to the image, for kubectl exec
SCRIPT_MODE = 0o700
# A failed container's status is re-checked against a fresh squeue when it ended within the status
# cache window plus this much (a status call may come a few seconds after the file was written).
RECHECK_WINDOW_SECONDS = 5.0
# sbatch messages that mean "SLURM is unreachable right now", not "this job is wrong".
_TRANSIENT_MARKERS = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                      "Slurm backup controller in standby mode", "Zero Bytes were transmitted")


def _meta(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    return str(meta.get("namespace", "") or "default"), str(meta.get("name", "")), str(meta.get("uid", ""))


def _slurm_error(op: str, ref: str, e: SlurmCommandError | asyncio.TimeoutError) -> Exception:
    if isinstance(e, asyncio.TimeoutError):
        return TransientPluginError(f"{op} {ref}: SLURM did not answer in time", status=504)
    if any(m in e.stderr or m in str(e) for m in _TRANSIENT_MARKERS) or e.returncode is None:
        return TransientPluginError(f"{op} {ref}: {e}", status=503)
    return PermanentPluginError(f"{op} {ref}: {e}", status=400)


class SlurmPlugin:
    def __init__(self, config: SlurmConfig, cli: SlurmCli | None = None) -> None:
        self.config = config
        self.cli = cli or SlurmCli(config)
        self.store = PodStore(config.data_root)
        self.poller = JobPoller(self.cli, config.status_cache_seconds, self._active_job_ids)
        self.job_usage = JobUsageCache(self.cli, config.usage_cache_seconds)
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self.warnings: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover every job from the data root (Go layout) and resume pending clean-ups."""
        if self.config.enable_probes:
            log.warning("EnableProbes is accepted but probes are not run by vnode's SLURM plugin: "
                        "running containers are reported ready")
        records = await asyncio.to_thread(self.store.load)
        for record in records:
            if record.final:
                info = info_from_json(record.final)
                if info is not None:
                    self.poller.seed_final(info)
            if record.deleted_at is not None:
                self.store.tombstone(record.uid)
                self._schedule_cleanup(record)
        log.info("recovered %d pods from %s (%d deleted, awaiting clean-up)", len(records), self.config.data_root,
                 sum(1 for r in records if r.deleted_at is not None))

    async def close(self) -> None:
        tasks = list(self._cleanups.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def job_states(self) -> Counter[str]:
        """Live pods' jobs by SLURM state, from the poller's cache (no SLURM call): metrics."""
        states: Counter[str] = Counter()
        for record in self.store.records():
            if record.deleted_at is not None:
                continue
            if not record.job_id:
                states["SUBMITTING"] += 1
                continue
            info = self.poller.cached(record.job_id)
            states[info.state.name if info is not None else "UNKNOWN"] += 1
        return states

    def _active_job_ids(self) -> list[str]:
        return [r.job_id for r in self.store.records() if r.job_id and r.deleted_at is None]

    # --- create -----------------------------------------------------------------------------------
    def _build(self, pod: Pod, data: RetrievedPodData, pod_dir: Path) -> tuple[JobFiles, int | None, dict[str, list[str]]]:
        directives = build_directives(pod, self.config)
        wire_containers = [c.to_wire() for c in data.containers or ()]
        plan = plan_volumes(pod, collect_volume_data(wire_containers), self.config.export_pod_data)
        for w in plan.warnings:
            log.warning("pod %s/%s: %s", pod.namespace, pod.name, w, extra=pod_fields(pod.namespace, pod.name, pod.uid))
        job = build_job(self.config, pod, str(pod_dir), directives, plan)
        uid = next((int(d.value) for d in directives.directives if d.name == "uid" and d.value and d.value.isdigit()), None)
        exec_argv = {c.name: singularity_argv(self.config, pod, c, str(pod_dir), plan.binds.get(c.name, []), command=[])
                     for c in pod.all_containers}
        return job, uid, exec_argv

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        namespace, name, uid = _meta(data.pod)
        ref = f"pod {namespace}/{name}"
        try:
            pod = parse_pod(data.pod)
        except PodSpecError as e:
            raise PermanentPluginError(f"{ref}: {e}", status=400) from None
        if data.job_script:
            raise PermanentPluginError(f"{ref}: interLink jobScript (JobScriptTemplate/JobScriptBuilderURL) is not supported by vnode's SLURM plugin", status=400)
        async with self.store.lock(uid):
            existing = self.store.get(uid)
            if self.store.is_tombstoned(uid) or (existing is not None and existing.deleted_at is not None):
                raise PermanentPluginError(f"{ref} ({uid}) was deleted; not creating it", status=409)
            if existing is not None and existing.job_id:
                return CreateStruct(uid, existing.job_id)  # a repeated create: the job exists already
            pod_dir = self.config.pod_dir(pod.namespace, pod.uid)
            try:
                job, run_as, exec_argv = self._build(pod, data, pod_dir)
            except (PodSpecError, DirectiveError) as e:
                raise PermanentPluginError(f"{ref}: {e}", status=400) from None
            record = PodRecord(uid=uid, namespace=pod.namespace, name=pod.name, pod_dir=pod_dir)
            self.store.add(record)
            try:
                await asyncio.to_thread(self._write_job, pod, pod_dir, job, run_as, exec_argv)
                job_id = await self.cli.sbatch(str(pod_dir / "job.slurm"))
            except BaseException as e:
                self.store.forget(uid)
                await asyncio.to_thread(disk.remove_pod_dir, pod_dir)
                if isinstance(e, (SlurmCommandError, asyncio.TimeoutError)):
                    raise _slurm_error("create", ref, e) from None
                if isinstance(e, ParseError):
                    raise TransientPluginError(f"create {ref}: {e}", status=502) from None
                if isinstance(e, OSError):
                    raise TransientPluginError(f"create {ref}: cannot write {pod_dir}: {e.strerror or e}", status=500) from None
                raise
            try:
                await asyncio.to_thread(disk.write_ids, pod_dir, job_id, uid, pod.namespace)
            except OSError as e:
                # Without its id files the job could never be found again: take it back.
                await self.cli.scancel(job_id)
                self.store.forget(uid)
                raise TransientPluginError(f"create {ref}: cannot record job {job_id}: {e.strerror or e}", status=500) from None
            record.job_id = job_id
            get_current_span().set_attribute("slurm.job.id", job_id)
            log.info("pod %s/%s uid %s: submitted as SLURM job %s", pod.namespace, pod.name, uid, job_id,
                     extra=pod_fields(pod.namespace, pod.name, uid, job_id))
            return CreateStruct(uid, job_id)

    def _write_job(self, pod: Pod, pod_dir: Path, job: JobFiles, run_as: int | None, exec_argv: dict[str, list[str]]) -> None:
        self.store.ensure_root()
        files: list[tuple[str, bytes, int]] = [
            ("job.slurm", job.job_slurm.encode("utf-8"), SCRIPT_MODE),
            ("job.sh", job.job_sh.encode("utf-8"), SCRIPT_MODE),
            *((f.path, f.content, f.mode) for f in job.files),
        ]
        disk.write_pod_dir(pod_dir, job.dirs, job.empty_dirs, files, uid=run_as)
        disk.write_json(pod_dir, disk.POD_FILE, dict(pod.raw))
        disk.write_json(pod_dir, EXEC_FILE, exec_argv)

    # --- delete -----------------------------------------------------------------------------------
    async def delete(self, pod: KubeObject) -> None:
        namespace, name, uid = _meta(pod)
        ref = f"pod {namespace}/{name}"
        async with self.store.lock(uid):
            record = self.store.get(uid)
            self.store.tombstone(uid)
            if record is None or record.deleted_at is not None:
                return  # unknown or already deleted: nothing to do, and not an error
            info = self.poller.cached(record.job_id) if record.job_id else None
            if record.job_id and not (info is not None and is_final(info)):
                try:
                    await self.cli.scancel(record.job_id)
                except (TimeoutError, SlurmCommandError) as e:
                    raise TransientPluginError(f"delete {ref}: {e}", status=503) from None
            record.deleted_at = time.time()
            await asyncio.to_thread(disk.mark_deleted, record.pod_dir, record.deleted_at)
            log.info("pod %s/%s uid %s: job %s cancelled; files kept %.0fs", namespace, name, uid, record.job_id or "-",
                     self.config.delete_retention_seconds, extra=pod_fields(namespace, name, uid, record.job_id))
            self._schedule_cleanup(record)

    def _schedule_cleanup(self, record: PodRecord) -> None:
        if record.uid in self._cleanups:
            return
        task = asyncio.ensure_future(self._cleanup(record))
        self._cleanups[record.uid] = task
        uid = record.uid
        task.add_done_callback(lambda _t: self._cleanups.pop(uid, None))

    async def _cleanup(self, record: PodRecord) -> None:
        delay = (record.deleted_at or time.time()) + self.config.delete_retention_seconds - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with self.store.lock(record.uid):
            await asyncio.to_thread(disk.remove_pod_dir, record.pod_dir)
            self.store.forget(record.uid)
            if record.job_id:
                self.poller.forget(record.job_id)
                self.job_usage.forget(record.job_id)
        self.store.expire_tombstones(max(3600.0, self.config.delete_retention_seconds))

    # --- status -----------------------------------------------------------------------------------
    def _asked(self, pods: Sequence[KubeObject]) -> list[_Asked]:
        out = []
        for pod in pods:
            namespace, name, uid = _meta(pod)
            out.append(_Asked(namespace, name, uid, self.store.get(uid), spec_containers(pod)))
        return out

    async def status(self, pods: list[KubeObject]) -> list[PodStatus]:
        asked = self._asked(pods)
        job_ids = [a.job_id for a in asked if a.job_id]
        try:
            infos = await self.poller.get(job_ids) if job_ids else {}
        except (TimeoutError, SlurmCommandError) as e:
            raise TransientPluginError(f"status: {e}", status=503) from None
        read_at = self.poller.now()
        submitted = [a for a in asked if a.job_id]
        await asyncio.to_thread(_read_state_files, submitted)
        infos.update(await self._recheck_failed(submitted, infos, read_at))
        out: list[PodStatus] = []
        for a in asked:
            if a.record is None:
                out.append(unknown_status(a.name, a.namespace, a.uid, a.containers))
            elif not a.record.job_id:
                out.append(creating_status(a.name, a.namespace, a.uid, a.containers))
            else:
                info = infos.get(a.record.job_id)
                if info is not None and is_final(info) and a.record.final is None:
                    a.record.final = info_to_json(info)
                    await asyncio.to_thread(self._save_final, a.record)
                out.append(pod_status(a.name, a.namespace, a.uid, a.containers, a.record.job_id, info, a.files,
                                      a.job_error))
        return out

    async def _recheck_failed(self, submitted: Sequence[_Asked], infos: Mapping[str, JobInfo | None],
                              read_at: float) -> dict[str, JobInfo | None]:
        """A container that just failed while the cached job state still says RUNNING may have been
        killed by the time limit or scancel, which SLURM records before the processes die: ask squeue
        once more for those jobs, so the container's reason (DeadlineExceeded, cancelled) is right the
        first time. Only for containers that ended within the cache window, so a pod whose other
        containers keep running costs no extra squeue later."""
        recent = datetime.now(UTC) - timedelta(seconds=self.config.status_cache_seconds + RECHECK_WINDOW_SECONDS)
        suspects = []
        for a in submitted:
            info = infos.get(a.job_id)
            if info is None or info.state.phase is not Phase.RUNNING:
                continue
            if any(f.exit_code not in (None, 0) and f.finished is not None and f.finished >= recent
                   for f in a.files.values()):
                suspects.append(info.job_id)
        if not suspects:
            return {}
        try:
            return await self.poller.get(suspects, newer_than=read_at)
        except (TimeoutError, SlurmCommandError):
            return {}  # the cached state stands

    def _save_final(self, record: PodRecord) -> None:
        try:
            disk.write_json(record.pod_dir, disk.FINAL_STATE_FILE, record.final, 0o644)
        except OSError as e:
            log.warning("pod %s/%s uid %s: cannot save the final job state: %s", record.namespace, record.name,
                        record.uid, e, extra=pod_fields(record.namespace, record.name, record.uid, record.job_id))

    # --- usage (plugin_client/USAGE.md) ----------------------------------------------------------
    async def usage(self, pods: list[KubeObject]) -> list[PodUsage]:
        """Per-container figures from each job's usage.json, job figures from one sstat (running)
        and sacct (finished); pods without a started job are left out."""
        asked = [a for a in self._asked(pods) if a.job_id]
        if not asked:
            return []
        try:
            infos = await self.poller.get([a.job_id for a in asked])
        except (TimeoutError, SlurmCommandError) as e:
            raise TransientPluginError(f"usage: {e}", status=503) from None
        running = [a.job_id for a in asked if (i := infos.get(a.job_id)) is not None and i.state.phase is Phase.RUNNING]
        finished = [a.job_id for a in asked if (i := infos.get(a.job_id)) is not None and is_final(i)]
        jobs = await self.job_usage.get(running, finished)
        await asyncio.to_thread(_read_state_files, asked, samples=True)
        out: list[PodUsage] = []
        for a in asked:
            if a.job_id not in running and a.job_id not in finished:
                continue  # pending, or SLURM forgot it: nothing ran that could be measured
            job, job_time = jobs.get(a.job_id, (None, None))
            found = pod_usage(a.uid, a.name, a.namespace, a.containers, a.files, a.samples, job, job_time)
            if found is not None:
                out.append(found)
        return out

    # --- ping / system info -----------------------------------------------------------------------
    async def ping(self) -> PingResponse:
        taints = None if self.config.taints is None else tuple(Taint(t.key, t.value, t.effect) for t in self.config.taints)
        if self.config.resource_script_path:
            try:
                answer = PingResponse.from_wire(json.loads(await self.cli.resource_script(self.config.resource_script_path)))
            except (TimeoutError, SlurmCommandError, ValueError, WireFormatError) as e:
                raise TransientPluginError(f"ping: ResourceScriptPath: {e}", status=503) from None
            return PingResponse(answer.status or "ok", answer.resources, taints if taints is not None else answer.taints)
        try:
            nodes = [n for n in await self.cli.sinfo() if usable(n)]
        except (TimeoutError, SlurmCommandError, ParseError) as e:
            raise TransientPluginError(f"ping: {e}", status=503) from None
        gpus = sum(n.gpus for n in nodes)
        resources = PingResources(
            cpu=str(sum(n.cpus for n in nodes)), memory=f"{sum(n.memory_mib for n in nodes)}Mi",
            pods=str(self.config.pods_capacity),
            accelerators=(Accelerator(self.config.gpu_resource_name, str(gpus)),) if gpus else None)
        return PingResponse(status="ok", resources=resources, taints=taints)

    async def system_info(self) -> Mapping[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            summary = await self.cli.sinfo_summary()
        except (TimeoutError, SlurmCommandError) as e:
            return {"status": "error", "timestamp": now, "slurm_connected": False, "sinfo_output": "", "error": str(e)}
        return {"status": "ok", "timestamp": now, "slurm_connected": True, "sinfo_output": summary, "error": "",
                "pods": sum(1 for r in self.store.records() if r.deleted_at is None),
                "slurm_calls": dict(self.cli.calls)}

    # --- logs -------------------------------------------------------------------------------------
    async def _container_kind(self, record: PodRecord, container: str) -> str:
        pod = await asyncio.to_thread(disk.read_pod, record.pod_dir)
        if pod is not None:
            for c in spec_containers(pod):
                if c.name == container:
                    return c.kind
            raise PermanentPluginError(f"container {container!r} is not in pod {record.namespace}/{record.name}", status=404)
        # a pod directory written by the Go plugin: find the container by its files
        for kind in ("run", "init"):
            if await asyncio.to_thread((record.pod_dir / f"{kind}-{container}.out").exists):
                return kind
        return "run"

    async def logs(self, request: LogStruct) -> AsyncIterator[bytes]:
        record = self.store.get(request.pod_uid)
        if record is None:
            raise PodNotFound(f"pod {request.namespace}/{request.pod_name} ({request.pod_uid}) is not known to this plugin", status=404)
        kind = await self._container_kind(record, request.container_name)
        if request.opts.previous:
            return  # containers are never restarted: there is no previous instance
        files = files_for(record.pod_dir, kind, request.container_name)
        if not request.opts.follow:
            async for chunk in stream_snapshot(files, request.opts, datetime.now(UTC)):
                yield chunk
            return

        async def job_over() -> bool:
            if record.deleted_at is not None:
                return True
            if not record.job_id:
                return False
            try:
                info = (await self.poller.get([record.job_id]))[record.job_id]
            except (TimeoutError, SlurmCommandError):
                return False
            return info is None or info.state.phase is Phase.FINISHED

        async for chunk in follow(files, request.opts, job_over, self.config.log_poll_seconds,
                                  log_fields=pod_fields(record.namespace, record.name, record.uid, record.job_id)):
            yield chunk

    # --- exec -------------------------------------------------------------------------------------
    async def exec(self, request: ExecRequest, session: ServerExecSession) -> int:
        ref = f"pod {request.namespace}/{request.pod_name}"
        record = self.store.live(request.pod_uid)
        if record is None or not record.job_id:
            raise PodNotFound(f"{ref} ({request.pod_uid}) has no running job here")
        if self.config.container_runtime != "singularity":
            raise PermanentPluginError(f"exec into {ref}: only supported with ContainerRuntime singularity")
        templates = await asyncio.to_thread(_read_exec_templates, record.pod_dir)
        argv = templates.get(request.container)
        if argv is None:
            raise PermanentPluginError(f"exec into {ref}: no container {request.container!r} (or the pod was created by another plugin)")
        try:
            info = (await self.poller.get([record.job_id]))[record.job_id]
        except (TimeoutError, SlurmCommandError) as e:
            raise TransientPluginError(f"exec into {ref}: {e}") from None
        state = await asyncio.to_thread(_container_files, record.pod_dir, request.container)
        if info is None or info.state.phase is not Phase.RUNNING or state.started is None or state.exit_code is not None:
            raise PermanentPluginError(f"exec into {ref}: container {request.container} is not running")
        rc_file = record.pod_dir / f".exec-{secrets.token_hex(8)}.rc"
        return await run_exec(self.cli, record.job_id, [*argv, *request.command], session, rc_file, self.config.bash_path)


@dataclass
class _Asked:
    """One pod of a /status or /usage request and what this plugin knows of it. The file fields are
    filled by `_read_state_files`, in a worker thread."""

    namespace: str
    name: str
    uid: str
    record: PodRecord | None
    containers: list[SpecContainer]  # from the request's spec (the pod as created when it has none)
    files: dict[str, ContainerFiles] = field(default_factory=dict)
    job_error: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.record.job_id if self.record is not None else ""


def _read_state_files(asked: Sequence[_Asked], samples: bool = False) -> None:
    """Blocking: each submitted pod's container files (and usage samples), into its `_Asked`."""
    for a in asked:
        if a.record is None or not a.record.job_id:
            continue
        if not a.containers:  # a request without the pod's spec: use the pod as created
            a.containers = spec_containers(disk.read_pod(a.record.pod_dir) or {})
        a.files, a.job_error = read_files(a.record.pod_dir, a.containers)
        if samples:
            a.samples = read_samples(a.record.pod_dir)


def _container_files(pod_dir: Path, container: str) -> ContainerFiles:
    spec = [c for c in spec_containers(disk.read_pod(pod_dir) or {}) if c.name == container]
    files, _ = read_files(pod_dir, spec)
    return files.get(container, ContainerFiles())


def _read_exec_templates(pod_dir: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((pod_dir / EXEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): [str(w) for w in v] for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


__all__ = ["JobInfo", "SlurmPlugin"]

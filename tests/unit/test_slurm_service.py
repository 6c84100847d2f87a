"""The plugin service with a fake SLURM command layer: ordering of create/delete, idempotency,
rollback on sbatch failure, recovery from disk. (The real SLURM path is in tests/integration.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plugin_client.errors import PermanentPluginError, PodNotFound, TransientPluginError
from plugin_client.models import LogOpts, LogStruct, RetrievedPodData
from vnode.plugins.slurm.config import SlurmConfig, parse_config
from vnode.plugins.slurm.parsers import JobInfo
from vnode.plugins.slurm.service import SlurmPlugin
from vnode.plugins.slurm.slurm_cli import SlurmCli, SlurmCommandError
from vnode.plugins.slurm.states import job_state


class FakeSlurm(SlurmCli):
    def __init__(self, config: SlurmConfig) -> None:
        super().__init__(config)
        self.jobs: dict[str, str] = {}  # job id → state
        self.next_id = 100
        self.sbatch_gate: asyncio.Event | None = None
        self.sbatch_error: SlurmCommandError | None = None
        self.cancelled: list[str] = []

    async def sbatch(self, script: str) -> str:
        self.calls["sbatch"] += 1
        assert Path(script).read_text().startswith("#!/bin/bash\n#SBATCH --job-name=")
        if self.sbatch_gate is not None:
            await self.sbatch_gate.wait()
        if self.sbatch_error is not None:
            raise self.sbatch_error
        self.next_id += 1
        self.jobs[str(self.next_id)] = "PENDING"
        return str(self.next_id)

    async def scancel(self, job_id: str) -> bool:
        self.calls["scancel"] += 1
        self.cancelled.append(job_id)
        known = job_id in self.jobs
        self.jobs[job_id] = "CANCELLED"
        return known

    async def squeue(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self.calls["squeue"] += 1
        return {j: JobInfo(j, job_state(self.jobs[j]), exit_code=0, source="squeue") for j in job_ids if j in self.jobs}

    async def sacct(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self.calls["sacct"] += 1
        return {}


def pod(name: str = "p", uid: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or str(uuid.uuid4())},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}], **spec}}


@pytest.fixture
async def plugin(tmp_path: Path) -> Any:
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nDeleteRetentionSeconds: 3600\n", {})
    service = SlurmPlugin(config, FakeSlurm(config))
    await service.start()
    yield service
    await service.close()


def fake(plugin: SlurmPlugin) -> FakeSlurm:
    assert isinstance(plugin.cli, FakeSlurm)
    return plugin.cli


async def test_create_writes_the_go_layout(plugin: SlurmPlugin) -> None:
    p = pod()
    result = await plugin.create(RetrievedPodData(pod=p))
    pod_dir = plugin.config.pod_dir("ns", p["metadata"]["uid"])
    assert (pod_dir / "JobID.jid").read_text() == result.pod_jid
    assert (pod_dir / "PodUID.uid").read_text() == p["metadata"]["uid"]
    assert (pod_dir / "PodNamespace.ns").read_text() == "ns"
    assert (pod_dir / "job.slurm").exists() and (pod_dir / "job.sh").exists()
    assert oct(pod_dir.stat().st_mode & 0o777) == oct(0o700)
    assert json.loads((pod_dir / "pod.json").read_text())["metadata"]["name"] == "p"


async def test_repeated_create_returns_the_same_job(plugin: SlurmPlugin) -> None:
    p = pod()
    first = await plugin.create(RetrievedPodData(pod=p))
    second = await plugin.create(RetrievedPodData(pod=p))
    assert first == second and fake(plugin).calls["sbatch"] == 1


async def test_deleting_pod_during_create_cancels_the_job_it_submitted(plugin: SlurmPlugin) -> None:
    p = pod()
    fake(plugin).sbatch_gate = asyncio.Event()
    create = asyncio.ensure_future(plugin.create(RetrievedPodData(pod=p)))
    await asyncio.sleep(0.05)  # create holds the pod's lock, waiting for sbatch
    delete = asyncio.ensure_future(plugin.delete(p))
    await asyncio.sleep(0.05)
    assert not delete.done()  # the delete waits for the job id
    fake(plugin).sbatch_gate.set()
    result = await create
    await delete
    assert fake(plugin).cancelled == [result.pod_jid]


async def test_delete_before_create_makes_the_create_refuse(plugin: SlurmPlugin) -> None:
    p = pod()
    await plugin.delete(p)  # unknown pod: success
    with pytest.raises(PermanentPluginError, match="was deleted"):
        await plugin.create(RetrievedPodData(pod=p))
    assert fake(plugin).calls["sbatch"] == 0


async def test_sbatch_failure_rolls_back_and_passes_the_message(plugin: SlurmPlugin) -> None:
    p = pod()
    fake(plugin).sbatch_error = SlurmCommandError(["sbatch"], "sbatch exited 1: sbatch: error: Invalid partition name specified", 1,
                                                  "sbatch: error: Invalid partition name specified")
    with pytest.raises(PermanentPluginError, match="Invalid partition name"):
        await plugin.create(RetrievedPodData(pod=p))
    assert not plugin.config.pod_dir("ns", p["metadata"]["uid"]).exists()
    assert plugin.store.get(p["metadata"]["uid"]) is None


async def test_unreachable_slurmctld_is_a_transient_error(plugin: SlurmPlugin) -> None:
    fake(plugin).sbatch_error = SlurmCommandError(["sbatch"], "sbatch exited 1: Unable to contact slurm controller", 1,
                                                  "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
    with pytest.raises(TransientPluginError):
        await plugin.create(RetrievedPodData(pod=pod()))


async def test_invalid_pod_is_refused_naming_the_field(plugin: SlurmPlugin) -> None:
    bad = pod(containers=[{"name": "Main_1", "image": "busybox"}])
    with pytest.raises(PermanentPluginError, match=r"spec.containers\[0\].name"):
        await plugin.create(RetrievedPodData(pod=bad))


async def test_restart_recovers_jobs_and_pending_deletes(tmp_path: Path) -> None:
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nDeleteRetentionSeconds: 3600\n", {})
    first = SlurmPlugin(config, FakeSlurm(config))
    await first.start()
    kept, deleted = pod("kept"), pod("gone")
    job = (await first.create(RetrievedPodData(pod=kept))).pod_jid
    await first.create(RetrievedPodData(pod=deleted))
    await first.delete(deleted)
    await first.close()

    cli = FakeSlurm(config)
    cli.jobs[job] = "RUNNING"
    second = SlurmPlugin(config, cli)
    await second.start()
    try:
        (status,) = await second.status([kept])
        assert status.jid == job
        assert second.store.get(deleted["metadata"]["uid"]).deleted_at is not None  # type: ignore[union-attr]
        with pytest.raises(PermanentPluginError, match="was deleted"):
            await second.create(RetrievedPodData(pod=deleted))
    finally:
        await second.close()


async def test_logs_of_an_unknown_pod_are_not_found(plugin: SlurmPlugin) -> None:
    with pytest.raises(PodNotFound):
        async for _ in plugin.logs(LogStruct("ns", "nope", "p", "main", LogOpts())):
            pass


async def test_status_asks_squeue_once_for_many_pods(plugin: SlurmPlugin) -> None:
    pods = [pod(f"p{i}") for i in range(50)]
    for p in pods:
        await plugin.create(RetrievedPodData(pod=p))
    statuses = await plugin.status(pods)
    assert [s.uid for s in statuses] == [p["metadata"]["uid"] for p in pods]
    assert fake(plugin).calls["squeue"] == 1


async def test_ping_uses_the_resource_script_and_config_taints(tmp_path: Path) -> None:
    script = tmp_path / "capacity.sh"
    script.write_text('#!/bin/sh\necho \'{"status":"ok","resources":{"cpu":"64","memory":"256Gi","pods":"50"}}\'\n')
    script.chmod(0o755)
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nResourceScriptPath: {script}\n"
                             "Taints:\n  - Key: site\n    Value: hpc\n    Effect: NoSchedule\n", {})
    service = SlurmPlugin(config)  # the real command layer: it runs the script
    answer = await service.ping()
    assert answer.to_wire() == {"status": "ok", "resources": {"cpu": "64", "memory": "256Gi", "pods": "50"},
                                "taints": [{"key": "site", "value": "hpc", "effect": "NoSchedule"}]}


async def test_ping_fails_transiently_when_the_resource_script_fails(tmp_path: Path) -> None:
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nResourceScriptPath: /bin/false\n", {})
    with pytest.raises(TransientPluginError, match="ResourceScriptPath"):
        await SlurmPlugin(config).ping()


async def test_a_container_killed_by_the_time_limit_says_deadline_exceeded_even_with_a_cached_running_state(
    tmp_path: Path,
) -> None:
    # SLURM marks the job TIMEOUT before its processes die; a state cached a moment earlier still
    # says RUNNING when job.sh records the container's exit code.
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nStatusCacheSeconds: 60\n", {})
    service = SlurmPlugin(config, FakeSlurm(config))
    await service.start()
    try:
        p = pod()
        job = (await service.create(RetrievedPodData(pod=p))).pod_jid
        slurm = fake(service)
        slurm.jobs[job] = "RUNNING"
        pod_dir = config.pod_dir("ns", p["metadata"]["uid"])
        (pod_dir / "run-main.started").write_text("2026-11-25T21:00:00Z\n")
        (status,) = await service.status([p])
        assert status.containers and status.containers[0].state.running is not None
        slurm.jobs[job] = "TIMEOUT"
        (pod_dir / "run-main.finished").write_text(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "\n")
        (pod_dir / "run-main.status").write_text("143\n")
        squeues = slurm.calls["squeue"]
        (status,) = await service.status([p])
        terminated = status.containers[0].state.terminated if status.containers else None
        assert terminated is not None and (terminated.reason, terminated.exit_code) == ("DeadlineExceeded", 143)
        assert slurm.calls["squeue"] == squeues + 1  # one fresh look, despite the 60 s cache
        await service.status([p])
        assert slurm.calls["squeue"] == squeues + 1  # the final state is kept
    finally:
        await service.close()

"""The SLURM plugin against the real testbed SLURM (slurmctld/slurmd/slurmdbd from Debian) and the
singularity stand-in. The plugin runs as its own process (`python -m vnode.plugins.slurm.cli`) on a
unix socket and is driven through plugin_client's client, as the agent drives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PermanentPluginError
from plugin_client.models import (
    ExecRequest,
    LogOpts,
    LogStruct,
    PodStatus,
    RetrievedContainer,
    RetrievedPodData,
)
from tests.conftest import Testbed

pytestmark = pytest.mark.integration
NAMESPACE = "slurm-it"
WAIT = 180.0  # bounds a hang; jobs here start in about a second


# --- the plugin process -------------------------------------------------------------------------------


@dataclass
class Plugin:
    testbed: Testbed
    workdir: Path
    socket_dir: Path
    extra_config: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    client: PluginClient | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def data_root(self) -> Path:
        return self.workdir / "jobs"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "plugin.sock"

    @property
    def singularity_log(self) -> Path:
        return self.workdir / "singularity.log"

    def config_text(self) -> str:
        return (f"Socket: unix://{self.socket}\nDataRootFolder: {self.data_root}\nSingularityPath: {self.testbed.singularity}\n"
                f"SbatchPath: {self.testbed.sbatch}\nScancelPath: {self.testbed.scancel}\nSqueuePath: {self.testbed.squeue}\n"
                f"SinfoPath: {self.testbed.sinfo}\nSacctPath: {self.testbed.sacct}\nSrunPath: {self.testbed.slurm_bin_dir / 'srun'}\n"
                f"StatusCacheSeconds: 0.5\nDeleteRetentionSeconds: 0\nDefaultMemory: 64Mi\nImagePrefix: 'docker://'\n{self.extra_config}")

    async def start(self) -> None:
        config = self.workdir / "SlurmConfig.yaml"
        config.write_text(self.config_text())
        env = {**self.testbed.env, "VNODE_SINGULARITY_LOG": str(self.singularity_log), **self.extra_env}
        log_fd = os.open(self.workdir / "plugin.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vnode.plugins.slurm.cli", "--config", str(config), env=env,
                stdout=log_fd, stderr=asyncio.subprocess.STDOUT)
        finally:
            os.close(log_fd)
        for _ in range(300):
            if self.socket.exists():
                break
            if self.proc.returncode is not None:
                pytest.fail(f"the plugin exited {self.proc.returncode}: {(self.workdir / 'plugin.log').read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        self.client = PluginClient(ClientConfig(Endpoint.parse(f"unix://{self.socket}")))

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None

    @property
    def c(self) -> PluginClient:
        assert self.client is not None
        return self.client

    async def create(self, pod: dict[str, Any], containers: tuple[RetrievedContainer, ...] | None = None) -> str:
        self.pods.append(pod)
        return (await self.c.create(RetrievedPodData(pod=pod, containers=containers))).pod_jid

    async def status(self, pod: dict[str, Any]) -> PodStatus:
        (status,) = await self.c.status([pod])
        return status

    async def wait_for(self, pod: dict[str, Any], ready: Callable[[PodStatus], bool], what: str, timeout: float = WAIT) -> PodStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        status = await self.status(pod)
        while not ready(status):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out waiting for {what}; last status {json.dumps(status.to_wire())[:1500]}")
            await asyncio.sleep(0.5)
            status = await self.status(pod)
        return status

    async def logs(self, pod: dict[str, Any], container: str, **opts: Any) -> bytes:
        meta = pod["metadata"]
        stream = await self.c.logs(LogStruct(meta["namespace"], meta["uid"], meta["name"], container, LogOpts(**opts)))
        return await stream.read_all()

    async def system_info(self) -> dict[str, Any]:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with aiohttp.ClientSession(connector=connector) as session, session.get("http://plugin/system-info") as response:
            assert response.status == 200
            return await response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def plugin(testbed: Testbed, tmp_path: Path) -> AsyncIterator[Plugin]:
    socket_dir = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))  # unix socket paths must stay short
    p = Plugin(testbed, tmp_path, socket_dir)
    await p.start()
    try:
        yield p
    finally:
        if p.client is None:
            await p.start()
        for pod in p.pods:  # never leave a job behind
            try:
                await p.c.delete(pod)
            except Exception:  # teardown goes on; the test itself reports what failed
                logging.getLogger(__name__).exception("teardown: delete of %s failed", pod["metadata"]["name"])
        await p.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def terminated(status: PodStatus) -> bool:
    return all(c.state.terminated is not None for c in (status.containers or ()))


def running(status: PodStatus) -> bool:
    return bool(status.containers) and all(c.state.running is not None for c in status.containers or ())


def make_pod(name: str, containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None,
             annotations: dict[str, str] | None = None, volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Never"}
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()), "annotations": annotations or {}},
            "spec": spec}


def by_name(status: PodStatus) -> dict[str, Any]:
    return {c.name: c for c in (status.init_containers or ()) + (status.containers or ())}


def scontrol(testbed: Testbed, job_id: str) -> dict[str, str]:
    out = testbed.run([testbed.scontrol, "show", "job", "--oneliner", job_id]).stdout
    fields: dict[str, str] = {}
    for word in out.split():
        key, _, value = word.partition("=")
        fields.setdefault(key, value)
    return fields


# --- the job ----------------------------------------------------------------------------------------


async def test_init_and_two_parallel_containers_with_logs_and_exit_codes(plugin: Plugin) -> None:
    flag = "/tmp/vnode-it-" + uuid.uuid4().hex
    pod = make_pod("parallel", init=[
        {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo first init"]},
        {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo second init; exit 0"]},
    ], containers=[
        # a waits for a file that b creates: only possible if they run at the same time
        {"name": "a", "image": "busybox", "command": ["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.1; done; echo a saw b"],
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
        {"name": "b", "image": "python:3.11", "command": ["python3", "-c", f"open('{flag}', 'w').close(); print('b done')"],
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
    ], volumes=[{"name": "tmp", "emptyDir": {}}])
    job_id = await plugin.create(pod)
    status = await plugin.wait_for(pod, terminated, "both containers to end")
    assert status.jid == job_id
    states = by_name(status)
    assert [states[n].state.terminated.exit_code for n in ("first", "second", "a", "b")] == [0, 0, 0, 0]
    assert all(states[n].state.terminated.reason == "Completed" for n in states)
    assert await plugin.logs(pod, "first", timestamps=False, tail=1) == b"first init\n"
    assert await plugin.logs(pod, "second", tail=1) == b"second init\n"
    assert await plugin.logs(pod, "a", tail=1) == b"a saw b\n"
    assert await plugin.logs(pod, "b", tail=1) == b"b done\n"


async def test_failing_container_fails_the_pod_with_its_exit_code(plugin: Plugin, testbed: Testbed) -> None:
    pod = make_pod("failing", containers=[
        {"name": "ok", "image": "busybox", "command": ["sh", "-c", "sleep 1"]},
        {"name": "bad", "image": "busybox", "command": ["sh", "-c", "echo oops >&2; exit 3"]}])
    job_id = await plugin.create(pod)
    states = by_name(await plugin.wait_for(pod, terminated, "the containers to end"))
    assert states["bad"].state.terminated.exit_code == 3 and states["bad"].state.terminated.reason == "Error"
    assert states["ok"].state.terminated.exit_code == 0
    assert await plugin.logs(pod, "bad", tail=1) == b"oops\n"
    assert testbed.wait_jobs_finished([job_id])[job_id] == ("FAILED", "3:0")


async def test_failing_init_container_stops_the_pod(plugin: Plugin) -> None:
    pod = make_pod("init-fails", init=[{"name": "setup", "image": "busybox", "command": ["sh", "-c", "exit 9"]}],
                   containers=[{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo never"]}])
    await plugin.create(pod)
    states = by_name(await plugin.wait_for(pod, terminated, "the pod to fail"))
    assert states["setup"].state.terminated.exit_code == 9
    assert "never started" in states["main"].state.terminated.message
    assert b"never" not in await plugin.logs(pod, "main")


async def test_resources_and_flags_become_sbatch_options_seen_by_scontrol(plugin: Plugin, testbed: Testbed) -> None:
    pod = make_pod("resources", containers=[
        {"name": "a", "image": "busybox", "command": ["sleep", "30"], "resources": {"limits": {"cpu": "1500m", "memory": "100Mi"}}},
        {"name": "b", "image": "busybox", "command": ["sleep", "30"], "resources": {"requests": {"cpu": "1", "memory": "28Mi"}}},
    ], annotations={"slurm-job.vk.io/flags": f"-p {testbed.slurm_partition} --time=00:10:00 --comment='two words # and a hash'"})
    job_id = await plugin.create(pod)
    job = scontrol(testbed, job_id)
    assert job["JobName"] == pod["metadata"]["uid"]
    assert job["NumCPUs"] == "3"  # ceil(1.5 + 1)
    assert job["MinMemoryNode"] == "128M"
    assert job["TimeLimit"] == "00:10:00"
    assert job["Partition"] == testbed.slurm_partition
    comment = testbed.run([testbed.squeue, "-h", "-j", job_id, "-O", "Comment:|"]).stdout.strip().rstrip("|")
    assert comment == "two words # and a hash"


async def test_run_as_user_runs_the_job_as_that_user(testbed: Testbed) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vs-uid-", dir="/tmp"))
    workdir.chmod(0o755)  # the job's user must reach its pod directory
    p = Plugin(testbed, workdir, workdir)
    p.singularity_log.touch(mode=0o666)  # the stand-in, run as that user, appends to it
    p.singularity_log.chmod(0o666)
    await p.start()
    try:
        pod = make_pod("asuser", containers=[{"name": "a", "image": "busybox", "command": ["id", "-u"]}])
        pod["spec"]["securityContext"] = {"runAsUser": 65534}
        job_id = await p.create(pod)
        assert scontrol(testbed, job_id)["UserId"].startswith("nobody(65534)")
        states = by_name(await p.wait_for(pod, terminated, "the pod to end"))
        assert states["a"].state.terminated.exit_code == 0, await p.logs(pod, "a")
        assert await p.logs(pod, "a", tail=1) == b"65534\n"
    finally:
        for pod in p.pods:
            await p.c.delete(pod)
        await p.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(("flags", "named"), [
    ("--partition=debug\n--wrap=evil", ["slurm-job.vk.io/flags", "'--wrap=evil'", "--wrap is not allowed"]),
    ("--partition=debug --comment='one\ntwo'", ["slurm-job.vk.io/flags", "--comment=one\\ntwo", "control character"]),
], ids=["refused-option", "newline-in-a-value"])
async def test_invalid_flags_fail_the_create_naming_the_flag(plugin: Plugin, flags: str, named: list[str]) -> None:
    pod = make_pod("badflags", containers=[{"name": "a", "image": "busybox", "command": ["true"]}],
                   annotations={"slurm-job.vk.io/flags": flags})
    with pytest.raises(PermanentPluginError) as info:
        await plugin.create(pod)
    assert all(part in str(info.value) for part in named), str(info.value)
    assert "partition" not in str(info.value)  # the valid flag before it is not blamed


async def test_sbatch_refusal_is_passed_back_with_its_message(plugin: Plugin) -> None:
    pod = make_pod("toobig", containers=[{"name": "a", "image": "busybox", "command": ["true"], "resources": {"limits": {"memory": "900Gi"}}}])
    with pytest.raises(PermanentPluginError) as info:
        await plugin.create(pod)
    assert "sbatch" in str(info.value) and "Memory specification can not be satisfied" in str(info.value)
    assert not (plugin.data_root / f"{NAMESPACE}-{pod['metadata']['uid']}").exists()


async def test_stderr_warnings_of_sbatch_and_squeue_are_not_failures(plugin: Plugin, testbed: Testbed) -> None:
    """SbatchPath/SqueuePath as command prefixes that print a warning first, like a chatty site wrapper."""
    await plugin.stop()
    warn = "echo \"$0: warning: site notice\" >&2; exec \"$0\" \"$@\""
    plugin.extra_config = (f"SbatchPath: {json.dumps(f'bash -c {shlex.quote(warn)} {testbed.sbatch}')}\n"
                           f"SqueuePath: {json.dumps(f'bash -c {shlex.quote(warn)} {testbed.squeue}')}\n")  # later keys win
    await plugin.start()
    pod = make_pod("warned", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo fine"]}])
    await plugin.create(pod)
    states = by_name(await plugin.wait_for(pod, terminated, "the pod to end"))
    assert states["a"].state.terminated.exit_code == 0
    assert "site notice" in (plugin.workdir / "plugin.log").read_text()  # logged, not fatal


async def test_create_accepts_a_one_element_list_as_interlink_0_4_sent(plugin: Plugin) -> None:
    pod = make_pod("listed", containers=[{"name": "a", "image": "busybox", "command": ["true"]}])
    plugin.pods.append(pod)
    body = json.dumps([RetrievedPodData(pod=pod).to_wire()])
    connector = aiohttp.UnixConnector(path=str(plugin.socket))
    async with aiohttp.ClientSession(connector=connector) as session, session.post("http://plugin/create", data=body) as response:
        assert response.status == 200
        (answer,) = await response.json()
    assert answer["PodUID"] == pod["metadata"]["uid"] and answer["PodJID"].isdigit()


async def test_timeout_ends_with_deadline_exceeded(plugin: Plugin) -> None:
    pod = make_pod("timeout", containers=[{"name": "a", "image": "busybox", "command": ["sleep", "600"]}],
                   annotations={"slurm-job.vk.io/flags": "--time=0:05"})  # SLURM rounds up to 1 minute
    await plugin.create(pod)
    states = by_name(await plugin.wait_for(pod, terminated, "the time limit", timeout=300))
    term = states["a"].state.terminated
    assert term.reason == "DeadlineExceeded" and term.exit_code != 0


# --- annotations ----------------------------------------------------------------------------------


async def test_pre_exec_runs_before_the_containers(plugin: Plugin) -> None:
    pod = make_pod("preexec", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo main"]}],
                   annotations={"slurm-job.vk.io/pre-exec": "echo pre-exec says $((6 * 7))"})
    await plugin.create(pod)
    await plugin.wait_for(pod, terminated, "the pod to end")
    logs = await plugin.logs(pod, "a")  # job.out comes first, as with the Go plugin
    assert b"pre-exec says 42\n" in logs and logs.endswith(b"main\n")


async def test_singularity_mounts_options_and_image_root_reach_the_runtime(plugin: Plugin, tmp_path: Path) -> None:
    shared = tmp_path / "extra"
    shared.mkdir()
    (shared / "note.txt").write_text("from the host\n")
    pod = make_pod("singopts", containers=[{"name": "a", "image": "library/busybox:1.36",
                                             "command": ["sh", "-c", 'cat /srv/note.txt; echo "OPT=$OPT"']}],
                   annotations={"slurm-job.vk.io/singularity-mounts": f"--bind {shared}:/srv",
                                "slurm-job.vk.io/singularity-options": "--env OPT=on",
                                "slurm-job.vk.io/image-root": "docker://registry.example.org/"})
    await plugin.create(pod)
    await plugin.wait_for(pod, terminated, "the pod to end")
    assert await plugin.logs(pod, "a", tail=2) == b"from the host\nOPT=on\n"
    argvs = [json.loads(line)["argv"] for line in plugin.singularity_log.read_text().splitlines()]
    ours = [a for a in argvs if "docker://registry.example.org/library/busybox:1.36" in a]
    assert ours and ["--bind", f"{shared}:/srv"] == ours[0][ours[0].index("--bind"):ours[0].index("--bind") + 2]


async def test_mpi_flags_launch_one_container_per_task_with_mpiexec(plugin: Plugin) -> None:
    assert shutil.which("mpiexec", path=plugin.testbed.env["PATH"]), "mpiexec (Debian package mpich) is needed on the node"
    pod = make_pod("mpi", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo rank-alive"]}],
                   annotations={"slurm-job.vk.io/flags": "--ntasks=3", "slurm-job.vk.io/mpi-flags": "-bind-to none"})
    await plugin.create(pod)
    states = by_name(await plugin.wait_for(pod, terminated, "the MPI pod to end"))
    assert states["a"].state.terminated.exit_code == 0
    assert (await plugin.logs(pod, "a", timestamps=False, since_seconds=3600)).count(b"rank-alive\n") == 3


# --- volumes --------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Mount points that exist on the testbed host: the stand-in (bubblewrap over the read-only host root)
# cannot create missing mount points the way apptainer does.
VOLUME_SCRIPT = r"""
set -e
cat /etc/opt/app.conf
cat /etc/opt/nested/item.txt
od -An -tx1 /var/opt/blob | tr -d ' \n'; echo
stat -c '%a' /var/opt/blob
cat /var/local/token; echo
cat /var/local/namespace; echo
cat /srv/from-init
cat /var/mail/hello
touch /etc/opt/x 2>/dev/null && echo cfg-writable || echo cfg-read-only
"""


@pytest.mark.parametrize("shared_fs", [False, True], ids=["job-writes-files", "shared-fs"])
async def test_volume_contents_are_visible_inside_the_container(testbed: Testbed, tmp_path: Path, shared_fs: bool) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))
    p = Plugin(testbed, tmp_path, socket_dir, extra_env={"SHARED_FS": "true" if shared_fs else "false"})
    await p.start()
    host_dir = tmp_path / "host"
    try:
        pod = make_pod("volumes", init=[
            {"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo written by init > /srv/from-init"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/srv"}, {"name": "host", "mountPath": "/var/mail"}]},
        ], containers=[
            {"name": "main", "image": "busybox", "command": ["sh", "-c", VOLUME_SCRIPT], "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/opt"}, {"name": "sec", "mountPath": "/var/opt"},
                {"name": "kube-api-access-abc", "mountPath": "/var/local"},
                {"name": "scratch", "mountPath": "/srv"}, {"name": "host", "mountPath": "/var/mail", "readOnly": True}]},
        ], volumes=[
            {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "app.conf", "path": "app.conf"},
                                                                   {"key": "item", "path": "nested/item.txt"}]}},
            {"name": "sec", "secret": {"secretName": "creds"}},
            {"name": "kube-api-access-abc", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                                      {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}},
        ])
        host_dir.mkdir()
        (host_dir / "hello").write_text("hello from hostPath\n")
        containers = (
            RetrievedContainer(name="prepare"),
            RetrievedContainer(name="main",
                               config_maps=({"metadata": {"name": "app"}, "data": {"app.conf": "key=value\nline two\n", "item": "nested item\n"}},),
                               secrets=({"metadata": {"name": "creds"}, "data": {"blob": b64(b"\x00\x01\xfe\xff")}},),
                               projected_volume_maps=({"metadata": {"name": "kube-api-access-abc"},
                                                       "data": {"token": "eyJhbGciOi.token", "namespace": NAMESPACE}},)),
        )
        await p.create(pod, containers)
        states = by_name(await p.wait_for(pod, terminated, "the pod to end"))
        logs = await p.logs(pod, "main", since_seconds=3600)
        assert states["main"].state.terminated.exit_code == 0, logs
        assert logs.decode().splitlines() == ["key=value", "line two", "nested item", "0001feff", "600", "eyJhbGciOi.token",
                                              NAMESPACE, "written by init", "hello from hostPath", "cfg-read-only"]
    finally:
        for pod in p.pods:
            await p.c.delete(pod)
        await p.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def test_unsupported_volume_fails_the_create_naming_it(plugin: Plugin) -> None:
    pod = make_pod("pvc", containers=[{"name": "a", "image": "busybox", "command": ["true"], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                   volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}])
    with pytest.raises(PermanentPluginError, match="'data' is a persistentVolumeClaim volume"):
        await plugin.create(pod)


# --- env and args byte-exact through real SLURM ----------------------------------------------------

# No carriage return here: the testbed's singularity stand-in reads --env-file with Python's universal
# newlines and turns "\r" into "\n" (reported to the testbed; apptainer reads the bytes). The unit
# round trip (tests/unit/test_slurm_script.py) covers "\r" through bash.
REAL_ARG = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30) | st.sampled_from(
    ["'", '"', "$HOME", "`id`", "$(id)", "a\nb", "\\", "*", "é 日本", "--bind /:/x", "", "%s", "\t"])
DUMP = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() if k.startswith('V_')}}))"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=st.lists(REAL_ARG, max_size=4), values=st.lists(REAL_ARG, min_size=1, max_size=4))
async def test_args_and_env_values_round_trip_through_slurm_and_the_runtime(plugin: Plugin, args: list[str], values: list[str]) -> None:
    env = [{"name": f"V_{i}", "value": v} for i, v in enumerate(values)]
    pod = make_pod("roundtrip", containers=[{"name": "dump", "image": "python:3.11", "command": ["python3", "-c", DUMP, *args], "env": env}])
    await plugin.create(pod)
    await plugin.wait_for(pod, terminated, "the dump to finish")
    out = (await plugin.logs(pod, "dump", tail=1)).decode()
    assert json.loads(out) == {"argv": args, "env": {e["name"]: e["value"] for e in env}}
    await plugin.c.delete(pod)


# --- status at scale, restart, delete -------------------------------------------------------------


async def test_200_pods_are_tracked_with_a_bounded_number_of_squeue_and_sacct_calls(plugin: Plugin, testbed: Testbed) -> None:
    await plugin.stop()
    plugin.extra_config = "StatusCacheSeconds: 60\nDefaultMemory: 16Mi\n"
    await plugin.start()
    pods = [make_pod(f"many-{i}", containers=[{"name": "a", "image": "busybox", "command": ["sleep", "600"]}]) for i in range(200)]
    for chunk in range(0, 200, 20):
        await asyncio.gather(*(plugin.create(p) for p in pods[chunk:chunk + 20]))
    before = (await plugin.system_info())["slurm_calls"]
    statuses = await plugin.c.status(pods)  # one request for every pod
    middle = (await plugin.system_info())["slurm_calls"]
    for pod in pods:  # then the interLink VK's way: one pod per request
        await plugin.status(pod)
    after = (await plugin.system_info())["slurm_calls"]
    assert len(statuses) == 200 and {s.uid for s in statuses} == {p["metadata"]["uid"] for p in pods}
    assert all(s.jid for s in statuses)
    assert middle.get("squeue", 0) - before.get("squeue", 0) <= 1
    assert middle.get("sacct", 0) - before.get("sacct", 0) <= 1
    assert after.get("squeue", 0) - middle.get("squeue", 0) <= 1  # 200 requests, answered from one refresh
    assert after.get("sacct", 0) - middle.get("sacct", 0) <= 1
    for chunk in range(0, 200, 20):
        await asyncio.gather(*(plugin.c.delete(p) for p in pods[chunk:chunk + 20]))
    plugin.pods.clear()
    left = testbed.run([testbed.squeue, "-h", "--states=PENDING,RUNNING", "-o", "%j"]).stdout.split()
    assert not set(left) & {p["metadata"]["uid"] for p in pods}


async def test_restarted_plugin_recovers_running_jobs(plugin: Plugin, testbed: Testbed) -> None:
    pod = make_pod("survivor", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo alive; sleep 600"]}])
    job_id = await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    await plugin.stop()
    await plugin.start()
    status = await plugin.wait_for(pod, running, "the recovered pod to run")
    assert status.jid == job_id
    assert await plugin.logs(pod, "a", tail=1) == b"alive\n"
    await plugin.c.delete(pod)
    assert testbed.wait_jobs_finished([job_id])[job_id][0].startswith("CANCELLED")


async def test_plugin_recovers_jobs_from_a_go_plugin_layout(plugin: Plugin, testbed: Testbed) -> None:
    """A data root written by the Go plugin: only JobID.jid, PodUID.uid, PodNamespace.ns and run-<c>.out/status."""
    uid = str(uuid.uuid4())
    pod_dir = plugin.data_root / f"{NAMESPACE}-{uid}"
    pod_dir.mkdir(parents=True)
    job_id = testbed.submit_job(pod_dir, "--wrap", f"echo go-era > {pod_dir}/run-main.out; echo 0 > {pod_dir}/run-main.status")
    testbed.wait_jobs_finished([job_id])
    (pod_dir / "JobID.jid").write_text(job_id)
    (pod_dir / "PodUID.uid").write_text(uid)
    (pod_dir / "PodNamespace.ns").write_text(NAMESPACE)
    await plugin.stop()
    await plugin.start()
    pod = {"metadata": {"name": "legacy", "namespace": NAMESPACE, "uid": uid}, "spec": {"containers": [{"name": "main", "image": "x"}]}}
    status = await plugin.status(pod)
    assert status.jid == job_id and status.containers[0].state.terminated.exit_code == 0  # type: ignore[index,union-attr]
    assert (await plugin.logs(pod, "main", tail=1)) == b"go-era\n"


async def test_deleting_pod_during_create_leaves_no_job(plugin: Plugin, testbed: Testbed) -> None:
    pod = make_pod("race", containers=[{"name": "a", "image": "busybox", "command": ["sleep", "600"]}])
    create = asyncio.ensure_future(plugin.c.create(RetrievedPodData(pod=pod)))
    delete = asyncio.ensure_future(plugin.c.delete(pod))
    results = await asyncio.gather(create, delete, return_exceptions=True)
    uid = pod["metadata"]["uid"]
    left = testbed.run([testbed.squeue, "-h", "--states=PENDING,RUNNING,CONFIGURING", "-n", uid, "-o", "%i"]).stdout.split()
    assert left == [], f"job still queued after create+delete: {results}"


async def test_deleting_unknown_or_finished_pods_succeeds(plugin: Plugin) -> None:
    await plugin.c.delete(make_pod("never-created", containers=[{"name": "a", "image": "busybox"}]))
    pod = make_pod("quick", containers=[{"name": "a", "image": "busybox", "command": ["true"]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, terminated, "the pod to end")
    await plugin.c.delete(pod)
    await plugin.c.delete(pod)  # twice is fine too


async def test_status_of_an_unknown_pod_is_container_status_unknown(plugin: Plugin) -> None:
    status = await plugin.status(make_pod("ghost", containers=[{"name": "a", "image": "busybox"}]))
    assert status.containers[0].state.terminated.reason == "ContainerStatusUnknown"  # type: ignore[index,union-attr]


async def test_ping_reports_capacity_from_sinfo(plugin: Plugin, testbed: Testbed) -> None:
    ping = await plugin.c.ping()
    assert ping is not None and ping.status == "ok" and ping.resources is not None
    line = testbed.run([testbed.sinfo, "-N", "-h", "-o", "%c %m"]).stdout.split()
    assert ping.resources.cpu == line[0] and ping.resources.memory == f"{line[1]}Mi"
    info = await plugin.system_info()
    assert info["slurm_connected"] is True and testbed.slurm_partition in info["sinfo_output"]


# --- logs and exec ----------------------------------------------------------------------------------


async def test_logs_with_every_option(plugin: Plugin) -> None:
    script = "echo one; echo two; sleep 2; echo three; sleep 1; echo four"
    pod = make_pod("logs", init=[{"name": "init", "image": "busybox", "command": ["sh", "-c", "echo from-init"]}],
                   containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", script]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    followed = await plugin.logs(pod, "a", follow=True)  # returns when the container ends
    assert followed == b"one\ntwo\nthree\nfour\n"
    assert await plugin.logs(pod, "init", tail=1) == b"from-init\n"
    assert await plugin.logs(pod, "a", tail=2) == b"three\nfour\n"
    assert await plugin.logs(pod, "a", tail=1, limit_bytes=2) == b"fo"
    stamped = (await plugin.logs(pod, "a", timestamps=True)).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three", "four"]
    moments = [datetime.fromisoformat(line.split(" ", 1)[0]) for line in stamped]
    assert moments == sorted(moments)
    since = moments[2] - timedelta(microseconds=1)
    assert await plugin.logs(pod, "a", since_time=since) == b"three\nfour\n"
    assert await plugin.logs(pod, "a", since_seconds=3600) == b"one\ntwo\nthree\nfour\n"
    assert await plugin.logs(pod, "a", previous=True) == b""
    assert (await plugin.logs(pod, "a")).endswith(b"one\ntwo\nthree\nfour\n")  # job.out first
    with pytest.raises(PermanentPluginError):
        await plugin.logs(pod, "nope")


async def test_follow_streams_lines_while_the_container_runs(plugin: Plugin) -> None:
    pod = make_pod("follow", containers=[{"name": "a", "image": "busybox",
                                           "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 1; done"]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    meta = pod["metadata"]
    stream = await plugin.c.logs(LogStruct(meta["namespace"], meta["uid"], meta["name"], "a", LogOpts(follow=True, timestamps=True)))
    chunks: list[tuple[datetime, bytes]] = []
    async with stream:
        async for chunk in stream:
            chunks.append((datetime.now(UTC), chunk))
    text = b"".join(c for _, c in chunks).decode()
    assert [line.split(" ", 1)[1] for line in text.splitlines()] == [f"line{i}" for i in range(1, 6)]
    assert len(chunks) >= 3  # delivered as they came, not in one piece at the end


async def test_exec_streams_stdio_and_returns_the_exit_code(plugin: Plugin) -> None:
    pod = make_pod("exec", containers=[{"name": "a", "image": "busybox", "command": ["sleep", "600"], "workingDir": "/usr",
                                         "env": [{"name": "GREETING", "value": "it's $HOME"}]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    meta = pod["metadata"]
    session = await plugin.c.exec(ExecRequest(meta["namespace"], meta["uid"], meta["name"], "a",
                                              ("sh", "-c", 'echo "$GREETING"; pwd; echo to-stderr >&2; cat; exit 5'), stdin=True))
    await session.send_stdin(b"typed input\n")
    await session.close_stdin()
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    async for stream, data in session:
        out[stream] += data
    result = await session.wait()
    assert result.exit_code == 5
    assert out == {"stdout": b"it's $HOME\n/usr\ntyped input\n", "stderr": b"to-stderr\n"}


async def test_exec_with_a_tty_sees_a_terminal_of_the_clients_size(plugin: Plugin) -> None:
    pod = make_pod("exectty", containers=[{"name": "a", "image": "busybox", "command": ["sleep", "600"]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    meta = pod["metadata"]
    session = await plugin.c.exec(ExecRequest(meta["namespace"], meta["uid"], meta["name"], "a",
                                              ("sh", "-c", "read line; test -t 0 && echo is-a-tty; stty size; exit 0"),
                                              stdin=True, tty=True, stderr=False))
    await session.resize(123, 45)
    await session.send_stdin(b"go\r")
    output = b""
    async for _stream, data in session:
        output += data
    assert (await session.wait()).exit_code == 0
    assert b"is-a-tty" in output and b"45 123" in output


async def test_exec_into_a_finished_container_is_refused(plugin: Plugin) -> None:
    pod = make_pod("execdone", containers=[{"name": "a", "image": "busybox", "command": ["true"]}])
    await plugin.create(pod)
    await plugin.wait_for(pod, terminated, "the pod to end")
    meta = pod["metadata"]
    session = await plugin.c.exec(ExecRequest(meta["namespace"], meta["uid"], meta["name"], "a", ("true",)))
    result = await session.wait()
    assert result.exit_code is None and "not running" in result.message


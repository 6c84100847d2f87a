"""vnode's own pieces together on the testbed, and the SLURM plugin on a data root in the Go
plugin's layout.

These are the compatibility-matrix rows that can run here (hack/interlink/README.md says why the
rows with interLink's Go binaries cannot: the Go module proxy reachable here does not serve them):

* vnode's agent (plugin dialect) → vnode's SLURM plugin → real SLURM → the singularity stand-in,
  with pods seen through the real apiserver and `kubectl logs` through it;
* vnode's SLURM plugin started on a DataRootFolder laid out as interLink's Go SLURM plugin
  leaves it (`<ns>-<uid>/` with JobID.jid, PodUID.uid, PodNamespace.ns, job.slurm/job.sh, the
  job writing run-<ctn>.out and run-<ctn>.status). The layout follows the reference notes on the
  Go plugin's source (prepare.go/Status.go), written here by the test, because the Go plugin
  itself cannot be built on this machine. The same SlurmConfig.yaml keys are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.models import LogStruct, PodStatus
from tests.agent_support import (
    FAST,
    cleanup_node,
    eventually,
    kget,
    pod_manifest,
    short_socket_dir,
    wait_default_service_account,
    wait_phase,
    wait_ready,
)
from tests.conftest import REPO, Testbed, unique
from vnode.app import App
from vnode.settings import settings_from_mapping

START_TIMEOUT = 60.0  # the plugin process importing and binding; bounds a hang only


def slurm_config(testbed: Testbed, data_root: Path, socket: Path) -> dict[str, Any]:
    """A SlurmConfig.yaml as the Go plugin's deployments write it: trailing slash on
    DataRootFolder, every SLURM path explicit, the runtime by absolute path."""
    return {
        "Socket": f"unix://{socket}",
        "DataRootFolder": f"{data_root}/",
        "SbatchPath": str(testbed.sbatch), "ScancelPath": str(testbed.scancel),
        "SqueuePath": str(testbed.squeue), "SinfoPath": str(testbed.sinfo), "SacctPath": str(testbed.sacct),
        "SingularityPath": str(testbed.singularity), "ImagePrefix": "docker://", "BashPath": "/bin/bash",
        "ExportPodData": True,
        "StatusCacheSeconds": 0.2,  # fresh SLURM state on every poll; these tests wait on changes
    }


@contextlib.asynccontextmanager
async def slurm_plugin(testbed: Testbed, data_root: Path, workdir: Path) -> AsyncIterator[Path]:
    """`python -m vnode.plugins.slurm.cli --config SlurmConfig.yaml` as a real process; yields its
    socket. Stopped by its pid (SIGTERM, then SIGKILL)."""
    socket = workdir / "slurm.sock"
    config = workdir / "SlurmConfig.yaml"
    config.write_text(yaml.safe_dump(slurm_config(testbed, data_root, socket)))
    log_path = workdir / "plugin.log"
    with open(log_path, "wb") as log:  # noqa: ASYNC230 (a local file opens instantly; the child keeps it)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vnode.plugins.slurm.cli", "--config", str(config),
            stdout=log, stderr=asyncio.subprocess.STDOUT, env={**testbed.env, "SHARED_FS": "true"}, cwd=REPO)
    try:
        async def listening() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"the SLURM plugin exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            return socket.exists()
        await eventually(listening, "the SLURM plugin's socket", timeout=START_TIMEOUT, interval=0.1)
        yield socket
    except BaseException:
        print(f"--- SLURM plugin log ({log_path}) ---\n{log_path.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def agent_on(testbed: Testbed, plugin_socket: Path, workdir: Path) -> AsyncIterator[str]:
    """vnode's agent in this process, pointed at the plugin's socket; yields the node name."""
    node = unique("vn-slurm")
    settings = settings_from_mapping({"InterlinkURL": f"unix://{plugin_socket}", **FAST,
                                      "KubeletCertDir": str(workdir / "certs")},
                                     nodename=node,
                                     env={"KUBECONFIG": str(testbed.kubeconfig), "POD_IP": "127.0.0.1"})
    app = App(settings)
    task = asyncio.ensure_future(app.run(install_signals=False))
    try:
        await wait_ready(testbed, node)
        yield node
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await cleanup_node(testbed, node)


def no_token(manifest: dict[str, Any]) -> dict[str, Any]:
    # The testbed's singularity stand-in cannot create the /var/run/secrets/... bind point inside
    # its read-only image, so these pods mount no service-account token.
    manifest["spec"]["automountServiceAccountToken"] = False
    return manifest


async def test_pods_run_finish_and_log_through_the_vnode_agent_and_slurm_plugin(
        testbed: Testbed, namespace: str) -> None:
    workdir = short_socket_dir()
    data_root = workdir / "jobs"
    greeting = "it's \"quoted\" $HOME `uname` ; rm -rf /"  # must reach the container byte for byte
    try:
        async with slurm_plugin(testbed, data_root, workdir) as socket, agent_on(testbed, socket, workdir) as node:
            await wait_default_service_account(testbed, namespace)
            ok = pod_manifest("ok", namespace, node, containers=[{
                "name": "main", "image": "busybox", "command": ["sh", "-c", 'echo "greeting=$GREETING"'],
                "env": [{"name": "GREETING", "value": greeting}]}])
            bad = pod_manifest("bad", namespace, node, containers=[{
                "name": "main", "image": "busybox", "command": ["sh", "-c", "echo failing; exit 3"]}])
            long = pod_manifest("long", namespace, node, containers=[{
                "name": "main", "image": "busybox", "command": ["sleep", "600"]}])
            for manifest in (ok, bad, long):
                await testbed.akubectl("apply", "-f", "-", input=json.dumps(no_token(manifest)))

            done = await wait_phase(testbed, namespace, "ok", "Succeeded")
            assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
            logs = await testbed.akubectl("logs", "-n", namespace, "ok")
            assert f"greeting={greeting}" in logs.stdout

            failed = await wait_phase(testbed, namespace, "bad", "Failed")
            assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3

            running = await wait_phase(testbed, namespace, "long", "Running")
            job_id = running["metadata"]["annotations"]["JobID"]
            assert (await testbed.arun([testbed.squeue, "-h", "-j", job_id, "-o", "%T"])).stdout.strip() == "RUNNING"
            await testbed.akubectl("delete", "pod", "-n", namespace, "long", "--wait=false")

            async def gone() -> bool:
                return await kget(testbed, "pod", "long", "-n", namespace) is None
            await eventually(gone, "pod long removed from the apiserver")
            await asyncio.to_thread(testbed.wait_jobs_finished, [job_id])
            assert testbed.sacct_states([job_id])[job_id][0].startswith("CANCELLED")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the Go plugin's on-disk layout -------------------------------------------------------------


def go_style_pod_dir(data_root: Path, namespace: str, uid: str, shell_command: str) -> Path:
    """A pod directory as the Go plugin writes it before sbatch: job.slurm (#SBATCH lines, then
    job.sh on its own line) and job.sh (no shebang; the container's output to run-<ctn>.out,
    its exit code to run-<ctn>.status)."""
    pod_dir = data_root / f"{namespace}-{uid}"
    pod_dir.mkdir(parents=True)
    (pod_dir / "job.slurm").write_text(
        "#!/bin/bash\n"
        f"#SBATCH --job-name={uid}\n"
        f"#SBATCH --output={pod_dir}/job.out\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=256\n"
        f"{pod_dir}/job.sh\n")
    (pod_dir / "job.sh").write_text(
        f"sh -c {shlex.quote(shell_command)} > {pod_dir}/run-main.out 2>&1\n"
        f"echo $? > {pod_dir}/run-main.status\n")
    (pod_dir / "job.slurm").chmod(0o774)
    (pod_dir / "job.sh").chmod(0o774)
    return pod_dir


async def submit_like_the_go_plugin(testbed: Testbed, pod_dir: Path, namespace: str, uid: str) -> str:
    out = await testbed.arun([testbed.sbatch, "--parsable", f"--chdir={pod_dir}", str(pod_dir / "job.slurm")])
    job_id = out.stdout.strip().split(";")[0]
    # The Go plugin writes these three files without a trailing newline.
    (pod_dir / "JobID.jid").write_text(job_id)
    (pod_dir / "PodUID.uid").write_text(uid)
    (pod_dir / "PodNamespace.ns").write_text(namespace)
    return job_id


def kube_pod(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The pod as the VK/API sends it in /status, /getLogs and /delete."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": {"phase": "Running"}}


def main_state(statuses: list[PodStatus], uid: str) -> Any:
    by_uid = {s.uid: s for s in statuses}
    assert uid in by_uid, f"the plugin did not report pod {uid}: {statuses}"
    return by_uid[uid].containers[0].state


async def test_slurm_plugin_adopts_running_and_finished_jobs_from_a_go_plugin_data_root(testbed: Testbed) -> None:
    workdir = short_socket_dir()
    data_root = workdir / "jobs"
    namespace = unique("go-layout")
    release = workdir / "release"  # the running job finishes when this file appears
    pods = {name: str(uuid.uuid4()) for name in ("finished", "running", "doomed")}
    commands = {
        "finished": "echo finished before the takeover",
        "running": f"echo waiting; while [ ! -e {release} ]; do sleep 0.2; done; echo released; exit 4",
        "doomed": "sleep 600",
    }
    jobs = {}
    try:
        for name, uid in pods.items():
            pod_dir = go_style_pod_dir(data_root, namespace, uid, commands[name])
            jobs[name] = await submit_like_the_go_plugin(testbed, pod_dir, namespace, uid)
        await asyncio.to_thread(testbed.wait_jobs_finished, [jobs["finished"]])

        async def job_running(job: str) -> bool:
            out = await testbed.arun([testbed.squeue, "-h", "-j", job, "-o", "%T"], check=False)
            return out.stdout.strip() == "RUNNING"
        for name in ("running", "doomed"):
            await eventually(lambda n=name: job_running(jobs[n]), f"job {name} running")

        async with slurm_plugin(testbed, data_root, workdir) as socket, \
                PluginClient(ClientConfig(endpoint=Endpoint.parse(f"unix://{socket}"))) as client:
            kube_pods = [kube_pod(namespace, name, uid) for name, uid in pods.items()]

            statuses = await client.status(kube_pods)
            finished = main_state(statuses, pods["finished"])
            assert finished.terminated is not None and finished.terminated.exit_code == 0
            running = main_state(statuses, pods["running"])
            assert running.running is not None, f"a running Go-plugin job must be reported Running, got {running}"
            assert {s.jid for s in statuses} >= {jobs["finished"], jobs["running"]}

            stream = await client.logs(LogStruct(namespace, pods["finished"], "finished", "main"))
            assert b"finished before the takeover" in await stream.read_all()

            release.touch()

            async def running_ended() -> Any:
                state = main_state(await client.status(kube_pods[1:2]), pods["running"])
                return state if state.terminated is not None else None
            ended = await eventually(running_ended, "the adopted job's container to terminate")
            assert ended.terminated.exit_code == 4
            stream = await client.logs(LogStruct(namespace, pods["running"], "running", "main"))
            assert b"released" in await stream.read_all()

            await client.delete(kube_pods[2])
            await asyncio.to_thread(testbed.wait_jobs_finished, [jobs["doomed"]])
            assert testbed.sacct_states([jobs["doomed"]])[jobs["doomed"]][0].startswith("CANCELLED")
    finally:
        for job in jobs.values():
            await testbed.arun([testbed.scancel, job], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


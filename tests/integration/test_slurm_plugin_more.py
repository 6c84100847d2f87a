"""More of the SLURM plugin against the real testbed SLURM and the singularity stand-in: the TCP
listener (`SidecarPort`), the post-mortem retention window after a delete, and a standalone
`downwardAPI` volume. The plugin process and helpers are those of test_slurm_plugin.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.models import RetrievedContainer
from tests.conftest import Testbed
from tests.integration.test_slurm_plugin import NAMESPACE, WAIT, Plugin, by_name, make_pod, running, terminated
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the TCP listener ------------------------------------------------------------------------------


@dataclass
class TcpPlugin(Plugin):
    """The same plugin process, configured with `SidecarPort` and no `Socket` at all."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        kept = [line for line in super().config_text().splitlines() if not line.startswith("Socket:")]
        return "\n".join([f"SidecarPort: {self.port}", *kept]) + "\n"

    async def start(self) -> None:
        config = self.workdir / "SlurmConfig.yaml"
        config.write_text(self.config_text())
        env = {k: v for k, v in {**self.testbed.env, **self.extra_env}.items() if k != "SIDECARPORT"}  # the YAML key is under test
        env["VNODE_SINGULARITY_LOG"] = str(self.singularity_log)
        log_fd = os.open(self.workdir / "plugin.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vnode.plugins.slurm.cli", "--config", str(config), env=env,
                stdout=log_fd, stderr=asyncio.subprocess.STDOUT)
        finally:
            os.close(log_fd)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # listening once a connection is accepted
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self.proc.returncode is not None:
                    pytest.fail(f"the plugin exited {self.proc.returncode}: {(self.workdir / 'plugin.log').read_text()[-3000:]}")
                if asyncio.get_running_loop().time() > deadline:
                    pytest.fail(f"the plugin never listened on {self.url}: {(self.workdir / 'plugin.log').read_text()[-3000:]}")
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            break
        self.client = PluginClient(ClientConfig(Endpoint.parse(self.url)))


@pytest.fixture
async def tcp_plugin(testbed: Testbed, tmp_path: Path) -> AsyncIterator[TcpPlugin]:
    p = TcpPlugin(testbed, tmp_path, tmp_path, port=free_port())
    await p.start()
    try:
        yield p
    finally:
        for pod in p.pods:  # never leave a job behind
            await p.c.delete(pod)
        await p.stop()


async def test_sidecar_port_serves_ping_create_status_and_delete_over_tcp(tcp_plugin: TcpPlugin, testbed: Testbed) -> None:
    assert "SidecarPort" in tcp_plugin.config_text() and "Socket:" not in tcp_plugin.config_text()
    ping = await tcp_plugin.c.ping()
    assert ping is not None and ping.status == "ok" and ping.resources is not None
    pod = make_pod("tcp", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo over tcp; sleep 600"]}])
    job_id = await tcp_plugin.create(pod)
    status = await tcp_plugin.wait_for(pod, running, "the pod to run")
    assert status.jid == job_id and status.uid == pod["metadata"]["uid"]
    await tcp_plugin.c.delete(pod)
    assert testbed.wait_jobs_finished([job_id])[job_id][0].startswith("CANCELLED")
    assert "without authentication" in (tcp_plugin.workdir / "plugin.log").read_text()  # the TCP warning was logged


# --- retention after delete ------------------------------------------------------------------------

RETENTION = 5  # seconds: short enough to wait for, long enough to look at the directory right after delete


async def test_deleted_pod_directory_is_kept_for_the_retention_window_then_removed(plain_plugin: Plugin) -> None:  # noqa: F811
    await plain_plugin.stop()
    plain_plugin.extra_config = f"DeleteRetentionSeconds: {RETENTION}\n"  # later keys win over the fixture's 0
    await plain_plugin.start()
    pod = make_pod("retained", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo post-mortem; sleep 600"]}])
    await plain_plugin.create(pod)
    await plain_plugin.wait_for(pod, running, "the pod to run")
    pod_dir = plain_plugin.data_root / f"{NAMESPACE}-{pod['metadata']['uid']}"
    await plain_plugin.c.delete(pod)
    assert (pod_dir / "JobID.jid").exists(), "the pod directory is gone right after the delete"
    deadline = asyncio.get_running_loop().time() + WAIT
    while pod_dir.exists():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{pod_dir} still there {WAIT:.0f}s after a delete with a {RETENTION}s retention window")
        await asyncio.sleep(0.5)


# --- a standalone downwardAPI volume ----------------------------------------------------------------

DOWNWARD_SCRIPT = r"""
set -e
cat /etc/opt/labels; echo
cat /etc/opt/meta/name; echo
stat -c '%a' /etc/opt/meta/name
touch /etc/opt/x 2>/dev/null && echo writable || echo read-only
"""


async def test_standalone_downward_api_volume_is_visible_inside_the_container(testbed: Testbed, tmp_path: Path) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))  # unix socket paths must stay short
    p = Plugin(testbed, tmp_path, socket_dir)
    await p.start()
    try:
        pod = make_pod("downward", containers=[{"name": "main", "image": "busybox", "command": ["sh", "-c", DOWNWARD_SCRIPT],
                                                 "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/opt"}]}],
                       volumes=[{"name": "podinfo", "downwardAPI": {"items": [
                           {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                           {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o440}]}}])
        # As interLink's VK sends it: the resolved values, ConfigMap-shaped, named after the volume.
        containers = (RetrievedContainer(name="main", projected_volume_maps=(
            {"metadata": {"name": "podinfo"}, "data": {"labels": 'app="web"\ntier="front"', "meta/name": "downward"}},)),)
        await p.create(pod, containers)
        states = by_name(await p.wait_for(pod, terminated, "the pod to end"))
        logs = await p.logs(pod, "main", since_seconds=3600)
        assert states["main"].state.terminated.exit_code == 0, logs
        assert logs.decode().splitlines() == ['app="web"', 'tier="front"', "downward", "440", "read-only"]
    finally:
        for pod in p.pods:
            await p.c.delete(pod)
        await p.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)

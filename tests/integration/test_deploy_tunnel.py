"""The tunneled scenario end to end with real OpenSSH: vnode's SLURM plugin listens on a unix socket
on the "HPC side" (real SLURM behind it), an SSH forward makes it appear at the socket path the
agent uses (the chart's config from deploy/examples/my-values.yaml), pods run and logs stream
through the tunnel, and the node's Ready condition follows the tunnel without restarting anything.

Three ways the forward is made:
* `ssh -nNT -L <agent socket>:<plugin socket>` from the cluster side to the login node's sshd;
* the login node's `ssh -R` into the chart's SSH bastion (deploy/images/bastion/entrypoint.sh
  running sshd with the sshd_config the chart renders);
* the chart's ssh-tunnel sidecar script (deploy/images/bastion/tunnel.sh), which reconnects by
  itself once the login node is back.

Every sshd and ssh runs on loopback with keys generated here, as a process stopped by its pid.
sshd runs as root here, so the tests log in as root (`-o PermitRootLogin=prohibit-password`) and
skip StrictModes (the keys live under /tmp); everything else is the chart's configuration.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agent_support import (
    cleanup_node,
    eventually,
    node_condition,
    short_socket_dir,
    wait_phase,
    wait_ready,
)
from tests.conftest import Testbed
from tests.deploy_support import (
    MY_VALUES,
    Proc,
    Rendered,
    free_port,
    kget_one,
    render,
    ssh_keygen,
    start_chart_agent,
    start_slurm_plugin,
    wait_for_path,
)

pytestmark = pytest.mark.integration
IMAGES = Path(__file__).resolve().parents[2] / "deploy" / "images" / "bastion"
FAST = {"PingPeriodSeconds": 1, "StatusPeriodSeconds": 0.5}
TICKS = 30  # the ticker pod prints one line a second; the tunnel goes down and up meanwhile


@dataclass
class Sides:
    """Both ends of the tunnel and what runs on them."""

    tmp: Path
    hpc_socket: Path  # where the plugin listens (login node)
    agent_socket: Path  # the path the agent dials (cluster side)
    client_key: Path
    client_pub: str
    host_key: Path
    host_pub: str
    sockets: list[Path]


@pytest.fixture
def sides(tmp_path: Path) -> Any:
    hpc, cluster = short_socket_dir(), short_socket_dir()
    client_key, host_key = tmp_path / "id_ed25519", tmp_path / "ssh_host_ed25519_key"
    s = Sides(tmp_path, hpc / "plugin.sock", cluster / "plugin.sock", client_key, ssh_keygen(client_key, "hpc-login"),
              host_key, ssh_keygen(host_key, "login-node"), [hpc, cluster])
    # sshd's privilege-separation directory; Debian's service start creates it, nothing else here does.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    yield s
    for d in s.sockets:
        shutil.rmtree(d, ignore_errors=True)


def ssh_client_options(sides: Sides, port: int, known_hosts: Path) -> list[str]:
    return ["-i", str(sides.client_key), "-p", str(port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]


def known_hosts(sides: Sides, port: int) -> Path:
    path = sides.tmp / f"known_hosts-{port}"
    path.write_text(f"[127.0.0.1]:{port} {sides.host_pub}\n")
    return path


async def start_login_sshd(sides: Sides, port: int) -> Proc:
    """The login node's sshd: keys only, streamlocal forwarding allowed, nothing else special."""
    authorized = sides.tmp / "login_authorized_keys"
    authorized.write_text(sides.client_pub + "\n")
    argv = ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1",
            "-o", f"HostKey={sides.host_key}", "-o", f"AuthorizedKeysFile={authorized}", "-o", "AllowUsers=root",
            "-o", "PermitRootLogin=prohibit-password", "-o", "StrictModes=no", "-o", "UsePAM=no",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "AllowStreamLocalForwarding=yes", "-o", "PidFile=none",
            "-o", "ClientAliveInterval=5", "-o", "ClientAliveCountMax=2"]
    proc = await Proc(argv, sides.tmp / f"login-sshd-{port}.log", dict(os.environ)).start()
    await wait_listening(port, proc)
    return proc


async def wait_listening(port: int, proc: Proc) -> None:
    async def probe() -> bool:
        if not proc.running:
            raise AssertionError(f"sshd exited:\n{proc.log()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True
    await eventually(probe, f"sshd on port {port}", timeout=30)


def chart(sides: Sides, node: str, namespace: str, extra: dict[str, Any] | None = None) -> Rendered:
    """The chart rendered from my-values.yaml, its plugin socket moved to this test's cluster side."""
    values = {"nodeName": node, "plugin": {"socket": f"unix://{sides.agent_socket}"},
              "vnode": {"kubeletPort": free_port(), "healthPort": free_port(), "extraConfig": FAST}, **(extra or {})}
    return render(MY_VALUES, values, namespace=namespace, tmp_dir=sides.tmp)


@contextlib.asynccontextmanager
async def running(*procs: Proc | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc is not None:
                await proc.stop(tree=True)


async def wait_not_ready(testbed: Testbed, node: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        cond = await node_condition(testbed, node)
        return cond if cond and cond["status"] == "False" else None
    return await eventually(probe, f"node {node} Ready=False")


def ticker_pod(name: str, node: str) -> dict[str, Any]:
    script = f'i=0; while [ $i -lt {TICKS} ]; do i=$((i+1)); echo "tick $i"; sleep 1; done'
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "nodeSelector": {"kubernetes.io/hostname": node}, "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
        "containers": [{"name": "main", "image": "busybox", "command": ["/bin/sh", "-c", script]}]}}


async def follow_until(testbed: Testbed, namespace: str, pod: str, line: str) -> list[str]:
    """`kubectl logs -f` until `line` arrives; returns the lines read. The stream is stopped after."""
    proc = await asyncio.create_subprocess_exec(
        str(testbed.kubectl), f"--kubeconfig={testbed.kubeconfig}", "logs", "-f", "-n", namespace, pod,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    seen: list[str] = []
    try:
        async with asyncio.timeout(120):
            assert proc.stdout is not None
            while line not in seen:
                raw = await proc.stdout.readline()
                assert raw, f"log stream ended before {line!r}: {seen}"
                seen.append(raw.decode().rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    return seen


async def test_pods_run_and_logs_stream_through_an_ssh_local_forward_and_ready_follows_the_tunnel(
        testbed: Testbed, namespace: str, unique_name: Callable[[str], str], sides: Sides) -> None:
    node = unique_name("vn-tunnel")
    port = free_port()
    plugin = await start_slurm_plugin(testbed, sides.tmp / "hpc", sides.hpc_socket)
    sshd = tunnel = agent = None
    async with running(plugin):
        sshd = await start_login_sshd(sides, port)
        tunnel_argv = ["ssh", "-nNT", *ssh_client_options(sides, port, known_hosts(sides, port)),
                       "-o", "StreamLocalBindUnlink=yes",
                       "-L", f"{sides.agent_socket}:{sides.hpc_socket}", "root@127.0.0.1"]
        tunnel = await Proc(tunnel_argv, sides.tmp / "tunnel.log", dict(os.environ)).start()
        async with running(sshd, tunnel):
            await wait_for_path(sides.agent_socket, tunnel, "ssh -L")
            rendered = chart(sides, node, namespace)
            agent = await start_chart_agent(rendered, sides.tmp, testbed.kubeconfig)
            async with running(agent):
                try:
                    await wait_ready(testbed, node)
                    await testbed.akubectl("apply", "-n", namespace, "-f", "-",
                                           input=yaml.safe_dump(ticker_pod("ticker", node)))
                    running_pod = await wait_phase(testbed, namespace, "ticker", "Running")
                    job = running_pod["metadata"]["annotations"]["JobID"]
                    streamed = await follow_until(testbed, namespace, "ticker", "tick 3")
                    assert streamed[-3:] == ["tick 1", "tick 2", "tick 3"], streamed

                    await tunnel.stop()  # the tunnel dies
                    cond = await wait_not_ready(testbed, node)
                    assert cond["reason"] == "PluginUnreachable", cond
                    assert str(sides.agent_socket) in cond["message"] and "unreachable" in cond["message"], cond
                    during = await kget_one(testbed, "pod", "ticker", "-n", namespace)
                    assert during["metadata"]["uid"] == running_pod["metadata"]["uid"]
                    assert during["status"]["phase"] == "Running"

                    tunnel = await Proc(tunnel_argv, sides.tmp / "tunnel.log", dict(os.environ)).start()
                    await wait_ready(testbed, node)
                    done = await wait_phase(testbed, namespace, "ticker", "Succeeded")
                    assert done["metadata"]["uid"] == running_pod["metadata"]["uid"]
                    assert done["metadata"]["annotations"]["JobID"] == job  # the same job, never resubmitted
                    assert agent.running, "the agent was restarted"
                    lines = (await testbed.akubectl("logs", "-n", namespace, "ticker")).stdout.splitlines()
                    assert lines[-TICKS:] == [f"tick {i}" for i in range(1, TICKS + 1)], lines
                    assert testbed.sacct_states([job])[job][0] == "COMPLETED"
                finally:
                    await cleanup_node(testbed, node)
                    if tunnel is not None:
                        await tunnel.stop()


async def test_login_node_reverse_forwards_into_the_charts_bastion(
        testbed: Testbed, namespace: str, unique_name: Callable[[str], str], sides: Sides) -> None:
    node = unique_name("vn-bastion")
    port = free_port()
    rendered = chart(sides, node, namespace, {"sshBastion": {"enabled": True, "port": 31022,
                                                             "clientKeys": {"authorizedKeys": sides.client_pub},
                                                             "hostKeys": {"priv": sides.host_key.read_text(),
                                                                          "pub": sides.host_pub}}})
    # The bastion container's files, as the chart mounts them: the Secret's keys and the sshd_config.
    keys_dir = sides.tmp / "bastion-keys"
    keys_dir.mkdir()
    for key, value in rendered.one("Secret", f"{node}-ssh-keys")["data"].items():
        (keys_dir / key).write_bytes(base64.b64decode(value))
    sshd_config = sides.tmp / "sshd_config"
    sshd_config.write_text(rendered.one("ConfigMap", f"{node}-sshd-config")["data"]["sshd_config"])
    bastion_env = {**os.environ, "BASTION_USER": "root", "BASTION_KEYS_DIR": str(keys_dir),
                   "BASTION_SSHD_CONFIG": str(sshd_config), "BASTION_STATE_DIR": str(sides.tmp / "bastion-state"),
                   "BASTION_PORT": str(port), "BASTION_LISTEN": "127.0.0.1"}
    bastion_args = rendered.container("ssh-bastion")["args"]
    assert bastion_args == ["bastion"]
    plugin = await start_slurm_plugin(testbed, sides.tmp / "hpc", sides.hpc_socket)
    bastion = await Proc([str(IMAGES / "entrypoint.sh"), *bastion_args, "-o", "PermitRootLogin=prohibit-password",
                          "-o", "StrictModes=no"], sides.tmp / "bastion.log", bastion_env).start()
    reverse_argv = ["ssh", "-nNT", *ssh_client_options(sides, port, known_hosts(sides, port)),
                    "-R", f"{sides.agent_socket}:{sides.hpc_socket}", "root@127.0.0.1"]
    reverse = agent = None
    async with running(plugin, bastion):
        await wait_listening(port, bastion)
        reverse = await Proc(reverse_argv, sides.tmp / "reverse.log", dict(os.environ)).start()
        async with running(reverse):
            await wait_for_path(sides.agent_socket, reverse, "ssh -R into the bastion")
            # StreamLocalBindMask from the chart: the agent's uid/gid may open it, nobody else
            assert stat.S_IMODE(sides.agent_socket.stat().st_mode) == 0o660
            agent = await start_chart_agent(rendered, sides.tmp, testbed.kubeconfig)
            async with running(agent):
                try:
                    await wait_ready(testbed, node)
                    pod = ticker_pod("short", node)
                    pod["spec"]["containers"][0]["command"] = ["/bin/sh", "-c", "echo through the bastion"]
                    await testbed.akubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
                    await wait_phase(testbed, namespace, "short", "Succeeded")
                    out = (await testbed.akubectl("logs", "-n", namespace, "short")).stdout
                    assert out.endswith("through the bastion\n"), out

                    # the bastion gives no shell
                    shell = await testbed.arun(["ssh", *ssh_client_options(sides, port, known_hosts(sides, port)),
                                                "root@127.0.0.1", "id"], check=False)
                    assert shell.returncode != 0 and "uid=" not in shell.stdout, shell

                    await reverse.stop()
                    cond = await wait_not_ready(testbed, node)
                    assert cond["reason"] == "PluginUnreachable", cond
                    # the login node reconnects: StreamLocalBindUnlink lets the new forward replace
                    # the socket the dead one left behind
                    reverse = await Proc(reverse_argv, sides.tmp / "reverse.log", dict(os.environ)).start()
                    await wait_ready(testbed, node)
                    assert reverse.running, reverse.log()
                    assert agent.running
                finally:
                    await cleanup_node(testbed, node)
                    await reverse.stop()


async def test_tunnel_sidecar_reconnects_by_itself_when_the_login_node_returns(
        testbed: Testbed, namespace: str, unique_name: Callable[[str], str], sides: Sides) -> None:
    node = unique_name("vn-sidecar")
    port = free_port()
    rendered = chart(sides, node, namespace, {
        "vnode": {"kubeletPort": free_port(), "healthPort": free_port(), "extraConfig": FAST,
                  "sshTunnel": {"enabled": True, "destination": "root@127.0.0.1", "port": port,
                                "remoteSocket": str(sides.hpc_socket), "keySecret": "hpc-ssh-key",
                                "knownHosts": f"[127.0.0.1]:{port} {sides.host_pub}"}}})
    sidecar = rendered.container("ssh-tunnel")
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    # the chart's mounts, replayed: the key Secret and the known_hosts ConfigMap
    key_dir = sides.tmp / "tunnel-key"
    key_dir.mkdir()
    shutil.copy(sides.client_key, key_dir / "id_ed25519")
    known = sides.tmp / "tunnel-known_hosts"
    known.write_text(rendered.one("ConfigMap", f"{node}-ssh-tunnel")["data"]["known_hosts"])
    assert env["TUNNEL_KEY_FILE"] == "/etc/vnode-tunnel/key/id_ed25519"
    env.update({"TUNNEL_KEY_FILE": str(key_dir / "id_ed25519"), "TUNNEL_KNOWN_HOSTS": str(known),
                "TUNNEL_SCRIPT": str(IMAGES / "tunnel.sh")})
    assert env["TUNNEL_LOCAL_SOCKET"] == str(sides.agent_socket)
    plugin = await start_slurm_plugin(testbed, sides.tmp / "hpc", sides.hpc_socket)
    sshd = await start_login_sshd(sides, port)
    tunnel = await Proc([str(IMAGES / "entrypoint.sh"), *sidecar["args"]], sides.tmp / "sidecar.log",
                        {**os.environ, **env}).start()
    agent = None
    async with running(plugin, tunnel):
        try:
            await wait_for_path(sides.agent_socket, tunnel, "the tunnel sidecar")
            agent = await start_chart_agent(rendered, sides.tmp, testbed.kubeconfig)
            await wait_ready(testbed, node)

            await sshd.stop(tree=True)  # the login node goes away, with every connection
            cond = await wait_not_ready(testbed, node)
            assert cond["reason"] == "PluginUnreachable", cond
            await eventually(lambda: _contains(tunnel, "reconnecting in"), "the sidecar to retry")

            sshd = await start_login_sshd(sides, port)  # back, same host key
            await wait_ready(testbed, node)
            assert tunnel.running and agent.running, "nothing is restarted"
        finally:
            await cleanup_node(testbed, node)
            if agent is not None:
                await agent.stop()
            await sshd.stop(tree=True)
    assert tunnel.proc.returncode == 0, tunnel.log()  # SIGTERM is a clean stop


async def _contains(proc: Proc, text: str) -> bool:
    return text in proc.log()

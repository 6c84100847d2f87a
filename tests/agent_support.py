"""Helpers for the agent's integration tests: run the agent (in-process or as a real `python -m
vnode` subprocess) against the real testbed apiserver and an in-test fake plugin, build pod
manifests, and wait for cluster state through kubectl without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.conftest import REPO, Testbed, unique
from tests.fakeplugin import FakeBackend, FakePlugin
from vnode.app import App
from vnode.settings import settings_from_mapping

T = TypeVar("T")

TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}
# Timeouts below only bound a hang; nothing asserts on durations.
WAIT = 120.0

# Fast loops for tests: statuses and pings every second or less.
FAST = {"StatusPeriodSeconds": 0.5, "PingPeriodSeconds": 1, "MissingReferenceRetrySeconds": 0.5,
        "CreateBackoffCapSeconds": 2,
        # Any free port, so agents of concurrent tests never collide; self-signed serving cert.
        "KubeletPort": 0, "DisableCSR": True}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str,
                     timeout: float = WAIT, interval: float = 0.3) -> T:
    """Poll an async probe until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


async def kget(testbed: Testbed, *args: str) -> Any | None:
    """`kubectl get ARGS -o json`, or None if it does not exist."""
    done = await testbed.akubectl("get", *args, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


async def kapply(testbed: Testbed, obj: dict[str, Any]) -> None:
    await testbed.akubectl("apply", "-f", "-", input=json.dumps(obj))


def pod_manifest(name: str, namespace: str, node: str, *, containers: list[dict[str, Any]] | None = None,
                 tolerate: bool = True, select: bool = True, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": containers or [{"name": "main", "image": "busybox", "command": ["true"]}],
        "restartPolicy": "Never", **spec}
    if select:
        body["nodeSelector"] = {"kubernetes.io/hostname": node}
    if tolerate:
        body["tolerations"] = [TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": body}


async def wait_default_service_account(testbed: Testbed, namespace: str) -> None:
    """Pods are rejected until the KCM created the namespace's `default` ServiceAccount."""
    await eventually(lambda: kget(testbed, "serviceaccount", "default", "-n", namespace),
                     f"serviceaccount default in {namespace}")


async def pod_uid(testbed: Testbed, namespace: str, name: str) -> str:
    pod = await eventually(lambda: kget(testbed, "pod", name, "-n", namespace), f"pod {name}")
    return str(pod["metadata"]["uid"])


async def wait_phase(testbed: Testbed, namespace: str, name: str, phase: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pod = await kget(testbed, "pod", name, "-n", namespace)
        return pod if pod and pod.get("status", {}).get("phase") == phase else None
    return await eventually(probe, f"pod {namespace}/{name} phase {phase}")


async def wait_gone(testbed: Testbed, *args: str) -> None:
    async def probe() -> bool:
        return await kget(testbed, *args) is None
    await eventually(probe, f"{' '.join(args)} to be gone")


async def node_condition(testbed: Testbed, node: str, ctype: str = "Ready") -> dict[str, Any] | None:
    obj = await kget(testbed, "node", node)
    if obj is None:
        return None
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


async def wait_ready(testbed: Testbed, node: str, status: str = "True") -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        cond = await node_condition(testbed, node)
        return cond if cond and cond["status"] == status else None
    return await eventually(probe, f"node {node} Ready={status}")


async def events_for(testbed: Testbed, namespace: str, uid: str) -> list[dict[str, Any]]:
    events = await kget(testbed, "events", "-n", namespace,
                        f"--field-selector=involvedObject.uid={uid}")
    return list((events or {}).get("items", []))


async def wait_event(testbed: Testbed, namespace: str, uid: str, reason: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((e for e in await events_for(testbed, namespace, uid) if e["reason"] == reason), None)
    return await eventually(probe, f"event {reason} on pod {uid}")


def short_socket_dir() -> Path:
    """A directory for unix sockets (paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="vn-", dir="/tmp"))


async def cleanup_node(testbed: Testbed, node: str) -> None:
    """Remove what an agent leaves in the cluster: its Node (the Lease goes with it by ownerRef)
    and its job-ledger ConfigMaps."""
    await testbed.akubectl("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)
    await testbed.akubectl("delete", "configmap", "-n", "kube-node-lease", "-l", f"vnode.dev/node={node}",
                           "--ignore-not-found", "--wait=false", check=False)


@dataclass
class InProcessAgent:
    testbed: Testbed
    node: str
    backend: FakeBackend
    plugin: FakePlugin
    app: App
    task: asyncio.Task[int]
    socket_dir: Path

    async def stop(self) -> int:
        self.app.request_stop()
        return await self.task


@contextlib.asynccontextmanager
async def running_agent(testbed: Testbed, *, backend: FakeBackend | None = None,
                        config: dict[str, Any] | None = None, node: str | None = None,
                        wait_ready_node: bool = True,
                        tracer_provider: Any = None) -> AsyncIterator[InProcessAgent]:
    """The agent in this process (same event loop as the fake plugin), on a fresh node.
    `tracer_provider`: where its spans go (App's kwarg; the process-wide one when None)."""
    backend = backend or FakeBackend()
    node = node or unique("vn")
    sockets = short_socket_dir()
    plugin = FakePlugin(backend, f"unix://{sockets}/plugin.sock")
    await plugin.start()
    settings = settings_from_mapping({"InterlinkURL": plugin.url, **FAST,
                                      "KubeletCertDir": str(sockets / "certs"), **(config or {})},
                                     nodename=node,
                                     env={"KUBECONFIG": str(testbed.kubeconfig), "POD_IP": "127.0.0.1"})
    app = App(settings, tracer_provider=tracer_provider)
    task = asyncio.ensure_future(app.run(install_signals=False))
    agent = InProcessAgent(testbed, node, backend, plugin, app, task, sockets)
    try:
        if wait_ready_node:
            await wait_ready(testbed, node)
        yield agent
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await plugin.stop()
        await cleanup_node(testbed, node)
        shutil.rmtree(sockets, ignore_errors=True)


@dataclass
class AgentProcess:
    """`python -m vnode run` as a real child process (for kill -9 and exit codes)."""

    testbed: Testbed
    node: str
    config_path: Path
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    env: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        # A local log file opens instantly; the child inherits the descriptor, we close ours.
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vnode", "run", "--config", str(self.config_path),
            "--nodename", self.node, cwd=str(REPO), env=self.env,
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL)
        log.close()

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def write_config(path: Path, plugin_url: str, **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"InterlinkURL": plugin_url, **FAST,
                                    "KubeletCertDir": str(path.parent / "certs"), **extra}))
    return path


def agent_process(testbed: Testbed, node: str, config_path: Path, log_path: Path) -> AgentProcess:
    env = {**testbed.env, "KUBECONFIG": str(testbed.kubeconfig), "POD_IP": "127.0.0.1",
           "PYTHONPATH": str(REPO) + os.pathsep + testbed.env.get("PYTHONPATH", "")}
    env.pop("NODENAME", None)
    return AgentProcess(testbed, node, config_path, log_path, env=env)

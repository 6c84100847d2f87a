"""A benchmark plugin: answers /create at once and reports the pod's containers Running a
configurable delay later, so that what a burst measures is the agent and the control plane.

    python -m bench.stubplugin --listen unix:///tmp/x/plugin.sock [--running-after 0]

Built on plugin_client.server, so it speaks interLink's plugin API exactly (the same server both
vnode's agent and interLink's API talk to). It keeps its own counters and serves them on
``GET /bench/stats`` (JSON): calls per operation, and for every /status call its arrival time and
the number of pods asked about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from plugin_client.errors import PodNotFound
from plugin_client.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateStruct,
    KubeObject,
    LogStruct,
    PingResponse,
    PodStatus,
    RetrievedPodData,
    pod_ref,
)
from plugin_client.server import make_app, start_server

STATS_PATH = "/bench/stats"


@dataclass
class StubPod:
    namespace: str
    name: str
    jid: str
    containers: tuple[str, ...]
    init_containers: tuple[str, ...]
    created: float  # time.monotonic() at /create
    started_at: datetime | None = None


def container_state(pod: StubPod, now: float, running_after: float) -> ContainerState:
    """Waiting until `running_after` seconds after create, then Running (from that moment)."""
    if now - pod.created < running_after:
        return ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
    if pod.started_at is None:
        pod.started_at = datetime.now(UTC).replace(microsecond=0)
    return ContainerState(running=ContainerStateRunning(started_at=pod.started_at))


class StubBackend:
    """The PluginBackend (see plugin_client.server.PluginBackend)."""

    def __init__(self, running_after: float = 0.0) -> None:
        self.running_after = running_after
        self.pods: dict[str, StubPod] = {}
        self.calls: Counter[str] = Counter()
        self.status_calls: list[tuple[float, int]] = []  # (unix time, pods asked about)
        self._jid = 0

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        self.calls["create"] += 1
        ref = pod_ref(data.pod)
        spec = data.pod.get("spec") or {}
        self._jid += 1
        self.pods[ref.uid] = StubPod(
            namespace=ref.namespace, name=ref.name, jid=f"stub-{self._jid}",
            containers=tuple(c.get("name", "") for c in spec.get("containers") or ()),
            init_containers=tuple(c.get("name", "") for c in spec.get("initContainers") or ()),
            created=time.monotonic())
        return CreateStruct(pod_uid=ref.uid, pod_jid=f"stub-{self._jid}")

    async def delete(self, pod: KubeObject) -> None:
        self.calls["delete"] += 1
        ref = pod_ref(pod)
        if self.pods.pop(ref.uid, None) is None:
            raise PodNotFound(f"pod {ref} not known to the stub plugin")

    async def status(self, pods: list[KubeObject]) -> list[PodStatus]:
        self.calls["status"] += 1
        self.status_calls.append((time.time(), len(pods)))
        now = time.monotonic()
        answer = []
        for kube_pod in pods:
            pod = self.pods.get(pod_ref(kube_pod).uid)
            if pod is None:
                continue  # unknown pods are left out, as plugins must
            state = container_state(pod, now, self.running_after)
            answer.append(PodStatus(
                name=pod.name, uid=pod_ref(kube_pod).uid, namespace=pod.namespace, jid=pod.jid,
                containers=tuple(ContainerStatus(name=c, state=state, ready=state.running is not None, image="")
                                 for c in pod.containers),
                init_containers=tuple(
                    ContainerStatus(name=c, state=ContainerState(
                        terminated=ContainerStateTerminated(exit_code=0, reason="Completed")))
                    for c in pod.init_containers)))
        return answer

    async def ping(self) -> PingResponse | None:
        self.calls["ping"] += 1
        return None  # `[]`, as a plugin without capacity reporting answers

    async def logs(self, request: LogStruct) -> AsyncIterator[bytes]:
        self.calls["logs"] += 1
        if request.pod_uid not in self.pods:
            raise PodNotFound(f"pod {request.namespace}/{request.pod_name} not known to the stub plugin")
        return self._log_lines()

    async def _log_lines(self) -> AsyncIterator[bytes]:
        yield b"stub plugin: no real container\n"

    def stats(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "pods": len(self.pods), "status_calls": self.status_calls,
                "running_after": self.running_after}


async def serve(listen: list[str], running_after: float, stop: asyncio.Event) -> None:
    backend = StubBackend(running_after)
    app = make_app(backend)

    async def stats(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps(backend.stats()), content_type="application/json")

    app.router.add_get(STATS_PATH, stats)
    server = await start_server(app, listen)
    print(json.dumps({"listening": server.urls}), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stubplugin", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append", required=True, help="unix:///path or http://host:port")
    p.add_argument("--running-after", type=float, default=0.0, help="seconds from /create to Running")
    args = p.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.listen, args.running_after, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

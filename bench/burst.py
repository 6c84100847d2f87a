"""One burst scenario: N pods onto one virtual node, watched until Running, then deleted.

Measured from outside the agent, through the real apiserver:
* create: every pod POSTed with CREATE_CONCURRENCY requests in flight; first/last create times;
* Running: a watch on the namespace (opened before the first create) records when each pod is
  first seen with phase Running; latency = that time - creationTimestamp (second resolution, as
  Kubernetes stores it) and, finer, - the time the create request returned;
* steady state: plugin /status calls (and pods per call) over STEADY_CYCLES status periods while
  all N pods run;
* delete: one deletecollection; time until the watch saw every pod DELETED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from vnode.kube.client import KubeClient
from vnode.kube.errors import Gone, KubeError, Transient

from .procs import Sampler
from .stats import calls_per_cycle, latencies, parse_rfc3339, percentile

CREATE_CONCURRENCY = 32  # creates in flight; well below the apiserver's 200 mutating requests
STEADY_CYCLES = 3  # status periods observed at steady state
TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}


def pod_manifest(name: str, namespace: str, node: str, *, bind: str) -> dict[str, Any]:
    """A one-container pod for `node`: bound directly (`spec.nodeName`, so the scheduler's own
    throughput is not measured) or through the scheduler (nodeSelector + toleration)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
        "restartPolicy": "Never", "tolerations": [TOLERATION], "terminationGracePeriodSeconds": 30}
    if bind == "direct":
        spec["nodeName"] = node
    else:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                           "labels": {"bench": "burst"}}, "spec": spec}


@dataclass
class PodTimes:
    created_sent: dict[str, float] = field(default_factory=dict)  # name -> request sent
    created_ack: dict[str, float] = field(default_factory=dict)  # name -> response received
    creation_ts: dict[str, float] = field(default_factory=dict)  # name -> creationTimestamp
    running: dict[str, float] = field(default_factory=dict)  # name -> first seen Running
    deleted: dict[str, float] = field(default_factory=dict)  # name -> DELETED seen


class PodWatch:
    """Watches one namespace's pods and records first-Running and DELETED times by name."""

    def __init__(self, kube: KubeClient, namespace: str, times: PodTimes) -> None:
        self.kube, self.namespace, self.times = kube, namespace, times
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        listing = await self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods")
        self._task = asyncio.ensure_future(self._run(listing["metadata"]["resourceVersion"]))

    async def _run(self, rv: str) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        while True:
            try:
                async for event in self.kube.watch(path, {"watch": "1", "resourceVersion": rv,
                                                          "allowWatchBookmarks": "true"},
                                                   inactivity_timeout=120):
                    obj = event.get("object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    self._record(event.get("type", ""), obj)
            except Gone:
                # Missed history: relist; pods already Running are recorded now (late, not lost).
                listing = await self.kube.get(path)
                rv = listing["metadata"]["resourceVersion"]
                for obj in listing.get("items", []):
                    self._record("MODIFIED", obj)
            except Transient:
                pass
            self.restarts += 1

    def _record(self, etype: str, obj: dict[str, Any]) -> None:
        now = time.time()
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name or etype == "BOOKMARK":
            return
        if meta.get("creationTimestamp") and name not in self.times.creation_ts:
            self.times.creation_ts[name] = parse_rfc3339(meta["creationTimestamp"])
        if etype == "DELETED":
            self.times.deleted.setdefault(name, now)
        elif (obj.get("status") or {}).get("phase") == "Running":
            self.times.running.setdefault(name, now)
        self.changed.set()

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class BurstResult:
    impl: str
    pods: int
    bind: str
    running_after: float
    first_create: float
    last_create: float
    all_running: float | None  # unix time the last pod was seen Running (None: timed out)
    running_count: int
    create_to_all_running_s: float | None
    last_create_to_all_running_s: float | None
    latency_creation_ts_p50: float
    latency_creation_ts_p99: float
    latency_ack_p50: float
    latency_ack_p99: float
    agent_added_p50: float
    agent_added_p99: float
    delete_all_s: float | None
    deleted_count: int
    cpu_create_s: float  # agent CPU seconds from first create to all Running
    cpu_total_s: float  # ... to all deleted (incl. steady state)
    peak_rss_mib: float
    kube_requests: dict[str, int]  # agent's apiserver requests per phase (if it counts them)
    status_calls_per_cycle: float | None
    pods_per_status_call: float | None
    plugin_calls: dict[str, int]
    create_errors: int
    running_series: list[tuple[float, int]]
    latencies_ack: list[float]
    notes: list[str] = field(default_factory=list)
    loadavg: tuple[float, float] = (0.0, 0.0)  # 1-min load average at the first create / after delete

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_burst(*, kube: KubeClient, impl: str, node: str, n: int, bind: str, running_after: float,
                    status_period: float, sampler: Sampler, agent_counters: Callable[[], dict[str, Any]],
                    plugin_stats: Callable[[], Awaitable[dict[str, Any]]], timeout: float,
                    log: Callable[[str], None]) -> BurstResult:
    from .stats import running_over_time

    namespace = f"bench-{impl}-{n}-{int(time.time()) % 100000}"
    await kube.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": namespace, "labels": {"bench": "burst"}}})
    await _wait_default_sa(kube, namespace)
    times = PodTimes()
    watch = PodWatch(kube, namespace, times)
    await watch.start()
    names = [f"p-{i:05d}" for i in range(n)]
    notes: list[str] = []
    errors = 0
    try:
        load_start = os.getloadavg()[0]
        plugin_before = await plugin_stats()
        counters_before = agent_counters()
        sampler.mark()
        sem = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(name: str) -> None:
            nonlocal errors
            async with sem:
                times.created_sent[name] = time.time()
                try:
                    await kube.post(f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name, namespace, node, bind=bind))
                except KubeError as err:
                    errors += 1
                    if errors <= 3:
                        notes.append(f"create {name} failed: {err}")
                    return
                times.created_ack[name] = time.time()

        log(f"{impl}: creating {n} pods in {namespace}")
        await asyncio.gather(*(create(name) for name in names))
        first_create = min(times.created_sent.values())
        last_create = max(times.created_ack.values(), default=first_create)
        log(f"{impl}: {len(times.created_ack)} created in {last_create - first_create:.1f}s; waiting for Running")
        ok = await watch.wait(lambda: len(times.running) >= len(times.created_ack), timeout)
        all_running = max(times.running.values()) if ok and times.running else None
        cpu_create, _ = sampler.window()
        counters_running = agent_counters()
        if not ok:
            notes.append(f"only {len(times.running)}/{len(times.created_ack)} pods Running after {timeout:.0f}s")
        log(f"{impl}: {len(times.running)} Running; steady state for {STEADY_CYCLES} status periods")

        steady_start = time.time()
        await asyncio.sleep(STEADY_CYCLES * status_period + 0.5)
        steady_end = time.time()
        plugin_after = await plugin_stats()
        status_times = [t for t, _ in plugin_after.get("status_calls", []) if steady_start <= t < steady_end]
        sizes = [k for t, k in plugin_after.get("status_calls", []) if steady_start <= t < steady_end]
        per_cycle = (calls_per_cycle(status_times, steady_start, steady_end, status_period)
                     if plugin_after.get("status_calls") is not None else None)

        log(f"{impl}: deleting {n} pods")
        delete_start = time.time()
        await kube.delete(f"/api/v1/namespaces/{namespace}/pods")
        deleted_ok = await watch.wait(lambda: len(times.deleted) >= len(times.created_ack), timeout)
        delete_end = max(times.deleted.values()) if deleted_ok and times.deleted else None
        if not deleted_ok:
            notes.append(f"only {len(times.deleted)}/{len(times.created_ack)} pods deleted after {timeout:.0f}s")
        cpu_total, peak_kib = sampler.window()
        counters_end = agent_counters()
        plugin_end = await plugin_stats()
    finally:
        await watch.stop()
        with contextlib.suppress(KubeError):
            await kube.delete(f"/api/v1/namespaces/{namespace}")

    ack_lat = latencies(times.created_ack, times.running)
    ts_lat = latencies(times.creation_ts, times.running)
    added = [x - running_after for x in ack_lat]

    def delta(a: dict[str, int], b: dict[str, int], key: str) -> int:
        return int(b.get(key, 0)) - int(a.get(key, 0))

    kube_requests = {}
    if "kube_requests" in counters_end:
        kube_requests = {"create_to_running": delta(counters_before, counters_running, "kube_requests"),
                         "total": delta(counters_before, counters_end, "kube_requests")}
    calls = {op: int(plugin_end.get("calls", {}).get(op, 0)) - int(plugin_before.get("calls", {}).get(op, 0))
             for op in ("create", "delete", "status", "ping", "logs")}
    return BurstResult(
        impl=impl, pods=n, bind=bind, running_after=running_after,
        first_create=first_create, last_create=last_create, all_running=all_running,
        running_count=len(times.running),
        create_to_all_running_s=(all_running - first_create) if all_running else None,
        last_create_to_all_running_s=(all_running - last_create) if all_running else None,
        latency_creation_ts_p50=percentile(ts_lat, 50), latency_creation_ts_p99=percentile(ts_lat, 99),
        latency_ack_p50=percentile(ack_lat, 50), latency_ack_p99=percentile(ack_lat, 99),
        agent_added_p50=percentile(added, 50), agent_added_p99=percentile(added, 99),
        delete_all_s=(delete_end - delete_start) if delete_end else None, deleted_count=len(times.deleted),
        cpu_create_s=round(cpu_create, 2), cpu_total_s=round(cpu_total, 2), peak_rss_mib=round(peak_kib / 1024, 1),
        kube_requests=kube_requests, status_calls_per_cycle=per_cycle,
        pods_per_status_call=(sum(sizes) / len(sizes)) if sizes else None,
        plugin_calls=calls, create_errors=errors,
        running_series=running_over_time(first_create, times.running.values()),
        latencies_ack=sorted(round(x, 3) for x in ack_lat), notes=notes + _watch_note(watch),
        loadavg=(load_start, os.getloadavg()[0]))


def _watch_note(watch: PodWatch) -> list[str]:
    return [f"pod watch restarted {watch.restarts} time(s)"] if watch.restarts else []


async def _wait_default_sa(kube: KubeClient, namespace: str, timeout: float = 60) -> None:
    """Pods are refused until the controller-manager created the namespace's `default` SA."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            return
        except KubeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def fetch_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        data: dict[str, Any] = json.loads(await resp.text())
        return data

"""The agent's Prometheus metrics (prometheus_client), served as `GET /metrics` on the health port.

| metric | type | labels | what |
|---|---|---|---|
| `vnode_pods` | gauge | phase | pods bound to this node that the agent holds, by phase (Pending, Running, Succeeded, Failed, Unknown) |
| `vnode_plugin_calls_total` | counter | op, outcome | plugin calls: create, delete, status, ping, usage, logs (to the start of the stream). outcome: `ok`, `cancelled` or the error class (`TransientPluginError`, `PermanentPluginError`, `PodNotFound`, `WireFormatError`, ...) |
| `vnode_plugin_call_duration_seconds` | histogram | op, outcome | their latency |
| `vnode_plugin_reachable` | gauge | | 1 while the plugin answers pings (the Node's Ready), else 0 |
| `vnode_plugin_consecutive_ping_failures` | gauge | | failed pings in a row (0 when the last one answered) |
| `vnode_lease_renew_failures_total` | counter | | Lease renewals that failed (the next period tries again) |
| `vnode_watch_restarts_total` | counter | resource, reason | watches re-opened after one ended: `closed` (the server's timeout, normal), `expired` (410 Gone, relist), `error` |
| `vnode_event_loop_lag_seconds` | histogram | | how late the event loop woke a 0.5 s sleep |
| `vnode_apiserver_requests_total` | counter | verb, resource | requests sent to the apiserver (WATCH counts opened watches) |
| `process_*`, `python_*` | | | prometheus_client's process, platform and GC collectors |

Figures the agent already keeps (pods, ping failures, request counts...) are read at scrape time by
a custom collector, so nothing is maintained per watch event; only plugin calls and lag samples are
observed as they happen. A registry per App, not the library's global one: several agents in one
process (tests) never share or collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# From a ping on a unix socket (~1 ms) to a create waiting on a busy slurmctld (PluginTimeout 120 s).
CALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A healthy loop is late by well under a millisecond; seconds mean something blocked it.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")

# Every vnode family, as text_string_to_metric_families names them (counters without _total).
FAMILIES = ("vnode_pods", "vnode_plugin_calls", "vnode_plugin_call_duration_seconds",
            "vnode_plugin_reachable", "vnode_plugin_consecutive_ping_failures",
            "vnode_lease_renew_failures", "vnode_watch_restarts", "vnode_event_loop_lag_seconds",
            "vnode_apiserver_requests")


def _nothing() -> Mapping[str, int]:
    return {}


def _no_restarts() -> Mapping[tuple[str, str], int]:
    return {}


def _zero() -> int:
    return 0


def _reachable_unknown() -> bool | None:
    return None


@dataclass
class AgentSources:
    """Where the scrape-time figures come from; the App points these at its parts once built."""

    pod_phases: Callable[[], Mapping[str, int]] = _nothing
    plugin_reachable: Callable[[], bool | None] = _reachable_unknown  # None: not pinged yet
    ping_failures: Callable[[], int] = _zero
    lease_renew_failures: Callable[[], int] = _zero
    watch_restarts: Callable[[], Mapping[tuple[str, str], int]] = _no_restarts  # (resource, reason)
    apiserver_requests: Callable[[], Mapping[str, int]] = _nothing  # "VERB resource" -> count


class _AgentCollector(Collector):
    def __init__(self, sources: Callable[[], AgentSources]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self._sources()
        pods = GaugeMetricFamily("vnode_pods", "Pods bound to this node, by phase", labels=["phase"])
        counts = s.pod_phases()
        for phase in sorted({*PHASES, *counts}):
            pods.add_metric([phase], counts.get(phase, 0))
        yield pods
        reachable = s.plugin_reachable()
        if reachable is not None:
            yield GaugeMetricFamily("vnode_plugin_reachable",
                                    "1 while the plugin answers pings (Node Ready), else 0",
                                    value=1 if reachable else 0)
        yield GaugeMetricFamily("vnode_plugin_consecutive_ping_failures",
                                "Failed plugin pings in a row", value=s.ping_failures())
        yield CounterMetricFamily("vnode_lease_renew_failures", "Failed Lease renewals",
                                  value=s.lease_renew_failures())
        restarts = CounterMetricFamily("vnode_watch_restarts", "Watches re-opened after one ended",
                                       labels=["resource", "reason"])
        for (resource, reason), count in sorted(s.watch_restarts().items()):
            restarts.add_metric([resource, reason], count)
        yield restarts
        requests = CounterMetricFamily("vnode_apiserver_requests", "Requests sent to the apiserver",
                                       labels=["verb", "resource"])
        for key, count in sorted(s.apiserver_requests().items()):
            verb, _, resource = key.partition(" ")
            requests.add_metric([verb, resource], count)
        yield requests


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = AgentSources()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.plugin_calls = Counter("vnode_plugin_calls", "Plugin calls by operation and outcome",
                                    ["op", "outcome"], registry=self.registry)
        self.plugin_call_duration = Histogram(
            "vnode_plugin_call_duration_seconds", "Plugin call latency by operation and outcome",
            ["op", "outcome"], buckets=CALL_BUCKETS, registry=self.registry)
        self.loop_lag = Histogram("vnode_event_loop_lag_seconds",
                                  "How late the event loop woke a 0.5 s sleep",
                                  buckets=LAG_BUCKETS, registry=self.registry)
        self.registry.register(_AgentCollector(lambda: self.sources))

    def observe_plugin_call(self, op: str, outcome: str, seconds: float) -> None:
        """PluginClient's observer."""
        self.plugin_calls.labels(op, outcome).inc()
        self.plugin_call_duration.labels(op, outcome).observe(seconds)

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self, _request: web.Request) -> web.Response:
        # Rendering runs inline: a few hundred lines, well under a millisecond even with thousands
        # of pods (the pod gauge is one pass over the controller's records).
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

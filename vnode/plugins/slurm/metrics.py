"""The SLURM plugin's Prometheus metrics (prometheus_client), served on their own listener.

| metric | type | labels | what |
|---|---|---|---|
| `vnode_slurm_command_duration_seconds` | histogram | command, outcome | every sbatch/squeue/sacct/sstat/scancel/sinfo call; `_count` is the number of invocations. outcome: ok, error (non-zero exit), timeout, not_started (could not be run) |
| `vnode_slurm_jobs` | gauge | state | the plugin's live pods' jobs by SLURM state (PENDING, RUNNING, COMPLETED, ...; `SUBMITTING` before sbatch answered, `UNKNOWN` not polled yet) |
| `vnode_slurm_plugin_http_requests_total` | counter | route, method, code | requests on the plugin API (route: /create, /status, ..., or `unmatched`) |
| `vnode_slurm_plugin_http_request_duration_seconds` | histogram | route | time to the answer (a log stream: to its end) |
| `process_*`, `python_*` | | | prometheus_client's process and platform collectors |

A registry per plugin (not the library's global one): several plugins in one process (tests) never
share or collide. Scrapes are `GET /metrics` on `MetricsAddress`, a plain-HTTP listener of its own:
the plugin API is a unix socket (Prometheus cannot scrape one) or an unauthenticated port that can
submit jobs, neither of which a scraper should need.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator

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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# SLURM commands take from ~10 ms (squeue on an idle controller) to minutes (a wedged one).
COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _JobsCollector(Collector):
    def __init__(self, states: Callable[[], Tally[str]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("vnode_slurm_jobs", "Jobs of the plugin's live pods by SLURM state", labels=["state"])
        for state, count in sorted(self._states().items()):
            family.add_metric([state], count)
        yield family


class PluginMetrics:
    def __init__(self, job_states: Callable[[], Tally[str]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.command_duration = Histogram(
            "vnode_slurm_command_duration_seconds", "SLURM command invocations and their duration",
            ["command", "outcome"], buckets=COMMAND_BUCKETS, registry=self.registry)
        self.http_requests = Counter(
            "vnode_slurm_plugin_http_requests", "Requests on the plugin API", ["route", "method", "code"], registry=self.registry)
        self.http_duration = Histogram(
            "vnode_slurm_plugin_http_request_duration_seconds", "Time to answer a plugin API request",
            ["route"], buckets=HTTP_BUCKETS, registry=self.registry)
        self.registry.register(_JobsCollector(job_states))

    def observe_command(self, command: str, outcome: str, seconds: float) -> None:
        self.command_duration.labels(command, outcome).observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = time.monotonic()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            self.http_requests.labels(route, request.method, str(code)).inc()
            self.http_duration.labels(route).observe(time.monotonic() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def app(self) -> web.Application:
        """The /metrics listener's application."""
        async def scrape(_request: web.Request) -> web.Response:
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        return app


def listen_url(address: str) -> str:
    """`MetricsAddress` (`host:port`, `:port`) as a start_server address."""
    host, _, port = address.rpartition(":")
    return f"http://{host or '0.0.0.0'}:{port}"

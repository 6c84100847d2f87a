"""The agent's observability without a cluster: its /metrics exposition, the event-loop lag monitor,
the spans of the pod controller, JSON log lines about pods, and the logging config keys."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PermanentPluginError
from plugin_client.logformat import JsonFormatter
from plugin_client.models import LogStruct, RetrievedPodData
from tests.agent_support import short_socket_dir
from tests.fakeplugin import FakeBackend, FakePlugin
from tests.unit.test_agent_pod_controller import Harness, make_pod
from vnode import cli
from vnode.kube.errors import KubeError
from vnode.node import metrics as metrics_module
from vnode.node.health_server import HealthServer
from vnode.node.lease_controller import LeaseController
from vnode.node.looplag import LoopLagMonitor
from vnode.node.metrics import FAMILIES, AgentMetrics, AgentSources
from vnode.settings import settings_from_mapping

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The value of the sample `name{labels}` (exactly those labels), in whichever family."""
    return next(s.value for family in found.values() for s in family if s.name == name and s.labels == labels)


def busy_sources() -> AgentSources:
    return AgentSources(
        pod_phases=lambda: {"Running": 3, "Pending": 1},
        plugin_reachable=lambda: True,
        ping_failures=lambda: 2,
        lease_renew_failures=lambda: 1,
        watch_restarts=lambda: {("pods", "closed"): 4, ("pods", "expired"): 1},
        apiserver_requests=lambda: {"PATCH pods/status": 7, "WATCH pods": 5},
    )


def test_the_exposition_parses_and_has_every_documented_family() -> None:
    metrics = AgentMetrics()
    metrics.sources = busy_sources()
    metrics.observe_plugin_call("create", "ok", 0.2)
    metrics.observe_loop_lag(0.003)
    found = samples(metrics.exposition().decode())
    assert set(FAMILIES) <= set(found)
    assert any(name.startswith("process_") for name in found)
    assert any(name.startswith("python_") for name in found)
    documented = metrics_module.__doc__ or ""
    config_md = (REPO / "vnode" / "CONFIG.md").read_text()
    for family in FAMILIES:
        exposed = {s.name for s in found[family]}
        shown = f"{family}_total" if f"{family}_total" in exposed else family
        assert f"`{shown}`" in documented, shown
        assert f"`{shown}`" in config_md, shown


def test_scrape_time_figures_come_from_the_agents_parts() -> None:
    metrics = AgentMetrics()
    metrics.sources = busy_sources()
    found = samples(metrics.exposition().decode())
    assert value(found, "vnode_pods", phase="Running") == 3
    assert value(found, "vnode_pods", phase="Pending") == 1
    assert value(found, "vnode_pods", phase="Failed") == 0  # every phase is a series, also at 0
    assert value(found, "vnode_plugin_reachable") == 1
    assert value(found, "vnode_plugin_consecutive_ping_failures") == 2
    assert value(found, "vnode_lease_renew_failures_total") == 1
    assert value(found, "vnode_watch_restarts_total", resource="pods", reason="expired") == 1
    assert value(found, "vnode_apiserver_requests_total", verb="PATCH", resource="pods/status") == 7
    metrics.sources = AgentSources(pod_phases=lambda: {"Running": 1})
    found = samples(metrics.exposition().decode())
    assert value(found, "vnode_pods", phase="Running") == 1
    assert "vnode_plugin_reachable" not in found  # not pinged yet: no guess


def test_two_agents_in_one_process_keep_their_own_figures() -> None:
    first, second = AgentMetrics(), AgentMetrics()
    first.observe_plugin_call("delete", "PodNotFound", 0.01)
    assert value(samples(first.exposition().decode()), "vnode_plugin_calls_total", op="delete", outcome="PodNotFound") == 1
    assert "vnode_plugin_calls_total" not in {s.name for s in samples(second.exposition().decode())["vnode_plugin_calls"]}


@pytest.fixture
async def fake_plugin() -> AsyncIterator[tuple[FakeBackend, PluginClient, AgentMetrics]]:
    backend = FakeBackend()
    sockets = short_socket_dir()
    plugin = FakePlugin(backend, f"unix://{sockets}/plugin.sock")
    await plugin.start()
    metrics = AgentMetrics()
    client = PluginClient(ClientConfig(Endpoint.parse(plugin.url)), observer=metrics.observe_plugin_call)
    try:
        yield backend, client, metrics
    finally:
        await client.close()
        await plugin.stop()


async def test_plugin_calls_are_counted_by_op_and_outcome_including_log_streams(
        fake_plugin: tuple[FakeBackend, PluginClient, AgentMetrics]) -> None:
    backend, client, metrics = fake_plugin
    pod = make_pod("u1")
    await client.ping()
    await client.create(RetrievedPodData(pod=pod))
    await client.status([pod])
    backend.append_log("u1", "main", b"hello\n")
    stream = await client.logs(LogStruct(namespace="ns", pod_uid="u1", pod_name="pod-u1", container_name="main"))
    assert b"hello" in b"".join([chunk async for chunk in stream])
    backend.fail("create", PermanentPluginError("no such partition", status=500))
    with pytest.raises(PermanentPluginError):
        await client.create(RetrievedPodData(pod=make_pod("u2")))
    found = samples(metrics.exposition().decode())
    for op in ("ping", "create", "status", "logs"):
        assert value(found, "vnode_plugin_calls_total", op=op, outcome="ok") == 1, op
        assert value(found, "vnode_plugin_call_duration_seconds_count", op=op, outcome="ok") == 1, op
    assert value(found, "vnode_plugin_calls_total", op="create", outcome="PermanentPluginError") == 1


async def test_metrics_are_served_on_the_health_port_next_to_the_probes() -> None:
    metrics = AgentMetrics()
    metrics.sources = busy_sources()
    health = HealthServer("127.0.0.1", 0)
    health.add_get("/metrics", metrics.scrape)
    await health.start()
    try:
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{health.port}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                text = await response.text()
            async with http.get(f"http://127.0.0.1:{health.port}/healthz") as response:
                assert response.status == 200
    finally:
        await health.close()
    assert value(samples(text), "vnode_pods", phase="Running") == 3


async def test_loop_lag_is_the_overshoot_of_a_sleep() -> None:
    now = [100.0]
    seen: list[float] = []

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.25  # the loop woke us a quarter second late

    monitor = LoopLagMonitor(seen.append, interval=0.5, clock=lambda: now[0], sleep=late_sleep)
    assert await monitor.measure_once() == pytest.approx(0.25)
    assert seen == [pytest.approx(0.25)] and monitor.last == pytest.approx(0.25)


async def test_a_blocked_loop_shows_as_lag_in_the_histogram() -> None:
    metrics = AgentMetrics()
    monitor = LoopLagMonitor(metrics.observe_loop_lag, interval=0.05)
    measuring = asyncio.ensure_future(monitor.measure_once())
    await asyncio.sleep(0)  # the monitor is asleep now
    time.sleep(0.3)  # noqa: ASYNC251  (blocking on purpose: this is the lag to see)
    lag = await measuring
    assert lag >= 0.2  # it cannot have woken before the loop was free again
    found = samples(metrics.exposition().decode())
    assert value(found, "vnode_event_loop_lag_seconds_count") == 1
    assert value(found, "vnode_event_loop_lag_seconds_sum") == pytest.approx(lag)


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_create_delete_and_status_cycles_are_spans_about_their_pods(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    h = Harness()
    h.ctrl.tracer = provider.get_tracer("test")
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        h.api.add_pod(make_pod("u2"))
        await h.settle()
        await h.poll()
        jid = h.backend.pods["u1"].jid
        h.api.mark_deleted("u1")
        await h.settle()
    finally:
        await h.close()
    finished = exporter.get_finished_spans()
    create = next(s for s in finished if s.name == "create pod" and s.attributes["k8s.pod.uid"] == "u1")
    assert create.attributes["k8s.pod.namespace"] == "ns" and create.attributes["k8s.pod.name"] == "pod-u1"
    assert create.attributes["vnode.job.id"] == jid
    cycle = next(s for s in finished if s.name == "status cycle" and s.attributes["vnode.status.lane"] == "full")
    assert cycle.attributes["vnode.pods"] == 2
    delete = next(s for s in finished if s.name == "delete pod")
    assert delete.attributes["k8s.pod.uid"] == "u1" and delete.status.status_code == StatusCode.UNSET


async def test_a_refused_create_is_an_error_span_with_the_plugins_message(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    h = Harness()
    h.ctrl.tracer = provider.get_tracer("test")
    h.backend.fail("create", PermanentPluginError("partition gpu does not exist", status=500))
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        await h.settle()
    finally:
        await h.close()
    create = next(s for s in exporter.get_finished_spans() if s.name == "create pod")
    assert create.status.status_code == StatusCode.ERROR
    assert "partition gpu does not exist" in (create.status.description or "")


async def test_json_log_lines_about_a_pod_carry_its_namespace_name_uid_and_job_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("vnode.node.pod_controller")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    h = Harness()
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        await h.settle()
        jid = h.backend.pods["u1"].jid
        h.api.mark_deleted("u1")
        await h.settle()
    finally:
        await h.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about = [line for line in lines if line.get("pod_uid") == "u1"]
    assert {line["message"].split(": ", 1)[1] for line in about} >= {"submitted to plugin", "deleted remotely"}
    for line in about:
        assert (line["pod_namespace"], line["pod_name"], line["job_id"]) == ("ns", "pod-u1", jid)


def test_interlinks_logging_keys_set_the_level() -> None:
    base = {"InterlinkURL": "unix:///run/p.sock"}
    verbose = settings_from_mapping({**base, "VerboseLogging": True}, nodename="n", env={"POD_IP": "10.0.0.1"})
    quiet = settings_from_mapping({**base, "ErrorsOnlyLogging": True}, nodename="n", env={"POD_IP": "10.0.0.1"})
    plain = settings_from_mapping(base, nodename="n", env={"POD_IP": "10.0.0.1"})
    assert (verbose.logging.verbose, quiet.logging.errors_only) == (True, True)
    assert not verbose.warnings and not quiet.warnings  # known keys: no "ignored" warning
    assert cli.log_level(verbose.logging) == logging.DEBUG
    assert cli.log_level(quiet.logging) == logging.ERROR
    assert cli.log_level(plain.logging) == logging.INFO


def test_log_format_comes_from_the_flag_else_vnode_log_format() -> None:
    args = cli.parser().parse_args(["run", "--log-format", "json"])
    assert args.log_format == "json"
    assert cli.parser().parse_args(["run"]).log_format is None
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run", "--log-format", "xml"])


class UnreachableLeases:
    """A LeaseApi whose apiserver fails every request (as during an apiserver outage)."""

    namespace = "kube-node-lease"

    def __init__(self) -> None:
        self.gets = 0

    async def get(self, name: str) -> dict[str, object] | None:
        self.gets += 1
        raise KubeError("apiserver unavailable")


async def test_failed_lease_renewals_are_counted_and_retried_next_period() -> None:
    leases = UnreachableLeases()
    lease = LeaseController(leases, "vn-1", lambda: "", renew_period=0.01)  # type: ignore[arg-type]
    running = asyncio.ensure_future(lease.run())
    try:
        while leases.gets < 3:
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert lease.renew_failures >= 3 and lease.renew_failures in (leases.gets, leases.gets - 1)

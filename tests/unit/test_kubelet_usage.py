"""/metrics/resource and /stats/summary: the rendering metrics-server reads, the plugin-backed usage
source (running pods only, a node counter that never goes back, rates), and the routes behind the
kubelet's authn/authz."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import vnode.kubelet.server as server_module
from plugin_client.errors import TransientPluginError, UsageNotSupported
from plugin_client.usage import ContainerUsage, PodUsage
from tests.kubelet_clients import Env, get
from tests.kubelet_support import (
    InMemoryReviews,
    StaticLogs,
    StaticPods,
    SubprocessExec,
    make_pod,
)
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.backends import BackendError, UsageReport
from vnode.kubelet.plugin_backends import PluginUsage
from vnode.kubelet.resourcemetrics import resource_metrics, summary
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

NODE = "node-under-test"
T0 = datetime(2026, 11, 25, 21, 0, 0, tzinfo=UTC)
UID_A, UID_B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"


def running_pod(namespace: str, name: str, uid: str, containers: Sequence[str], phase: str = "Running",
                running: Sequence[str] | None = None) -> dict[str, Any]:
    pod = make_pod(namespace, name, uid=uid, containers=containers)
    pod["status"] = {"phase": phase, "startTime": "2026-11-25T20:59:00Z", "containerStatuses": [
        {"name": c, "state": {"running": {"startedAt": "2026-11-25T20:59:30Z"}} if c in (running if running is not None else containers)
         else {"terminated": {"exitCode": 0}}} for c in containers]}
    return pod


def usage(uid: str, name: str, at: datetime, **containers: tuple[int, int]) -> PodUsage:
    return PodUsage(uid=uid, name=name, namespace="team", timestamp=at,
                    containers=tuple(ContainerUsage(c, cpu, mem, timestamp=at) for c, (cpu, mem) in containers.items()))


class ScriptedPlugin:
    """Answers usage from a list the test sets; can fail or lack the extension."""

    def __init__(self) -> None:
        self.answer: list[PodUsage] = []
        self.error: Exception | None = None
        self.asked: list[list[str]] = []

    async def usage(self, pods: Sequence[Mapping[str, Any]]) -> list[PodUsage]:
        self.asked.append([p["metadata"]["uid"] for p in pods])
        if self.error is not None:
            raise self.error
        return list(self.answer)


def families(body: bytes) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


# ---- rendering ---------------------------------------------------------------------------------


async def report_of(pods: list[dict[str, Any]], answer: list[PodUsage]) -> UsageReport:
    plugin = ScriptedPlugin()
    plugin.answer = answer
    found = await PluginUsage(StaticPods(pods), plugin, clock=lambda: T0).usage()
    assert found is not None
    return found


async def test_resource_metrics_have_the_series_metrics_server_reads_with_sample_timestamps() -> None:
    at = T0 + timedelta(seconds=5)
    report = await report_of([running_pod("team", "burn", UID_A, ["main", "side"])],
                             [usage(UID_A, "burn", at, main=(2_500_000_000, 300 * 2**20), side=(10_000_000, 2**20))])
    found = families(resource_metrics(report))
    labels = {"container": "main", "pod": "burn", "namespace": "team"}
    cpu = next(s for s in found["container_cpu_usage_seconds"] if s.labels == labels)
    assert (cpu.name, cpu.value, cpu.timestamp) == ("container_cpu_usage_seconds_total", 2.5, at.timestamp())
    mem = next(s for s in found["container_memory_working_set_bytes"] if s.labels == labels)
    assert mem.value == 300 * 2**20
    start = next(s for s in found["container_start_time_seconds"] if s.labels == labels)
    assert start.value == datetime(2026, 11, 25, 20, 59, 30, tzinfo=UTC).timestamp()
    assert found["node_cpu_usage_seconds"][0].value == pytest.approx(2.51)
    assert found["node_memory_working_set_bytes"][0].value == 301 * 2**20
    assert found["pod_cpu_usage_seconds"][0].labels == {"pod": "burn", "namespace": "team"}
    assert found["scrape_error"][0].value == 0
    text = resource_metrics(report).decode()
    assert "# TYPE node_cpu_usage_seconds_total counter" in text
    assert "# TYPE container_memory_working_set_bytes gauge" in text


async def test_summary_has_node_pod_and_container_cpu_and_memory() -> None:
    report = await report_of([running_pod("team", "burn", UID_A, ["main"])], [usage(UID_A, "burn", T0, main=(7, 8))])
    document = summary(report, NODE)
    assert document["node"]["nodeName"] == NODE
    assert document["node"]["cpu"]["usageCoreNanoSeconds"] == 7
    assert document["node"]["memory"]["workingSetBytes"] == 8
    (pod,) = document["pods"]
    assert pod["podRef"] == {"name": "burn", "namespace": "team", "uid": UID_A}
    assert pod["containers"][0]["name"] == "main" and pod["containers"][0]["memory"]["workingSetBytes"] == 8
    assert pod["startTime"] == "2026-11-25T20:59:00Z"
    json.dumps(document)  # plain JSON


# ---- the plugin-backed source ------------------------------------------------------------------


async def test_only_running_pods_and_running_containers_are_reported() -> None:
    pods = [running_pod("team", "burn", UID_A, ["main", "done"], running=["main"]),
            running_pod("team", "over", UID_B, ["main"], phase="Succeeded")]
    report = await report_of(pods, [usage(UID_A, "burn", T0, main=(5, 50), done=(3, 30)),
                                    usage(UID_B, "over", T0, main=(100, 0))])
    assert [(p.name, [c.name for c in p.containers]) for p in report.pods] == [("burn", ["main"])]
    assert report.node is not None
    assert report.node.cpu_core_nanoseconds == 108  # the finished pod's CPU still counts for the node
    assert report.node.memory_working_set_bytes == 80


async def test_the_node_cpu_counter_never_goes_back_when_pods_leave() -> None:
    pods = StaticPods([running_pod("team", "a", UID_A, ["main"]), running_pod("team", "b", UID_B, ["main"])])
    plugin = ScriptedPlugin()
    source = PluginUsage(pods, plugin, clock=lambda: T0)
    plugin.answer = [usage(UID_A, "a", T0, main=(10, 1)), usage(UID_B, "b", T0, main=(20, 1))]
    first = await source.usage()
    pods.pods.pop(0)  # pod a is deleted
    plugin.answer = [usage(UID_B, "b", T0 + timedelta(seconds=5), main=(25, 1))]
    second = await source.usage()
    plugin.answer = []  # the plugin forgets b for a moment
    third = await source.usage()
    assert first and second and third and first.node and second.node and third.node
    assert [first.node.cpu_core_nanoseconds, second.node.cpu_core_nanoseconds, third.node.cpu_core_nanoseconds] == [30, 35, 35]


async def test_rates_are_computed_between_answers_when_the_plugin_gives_none() -> None:
    pods = StaticPods([running_pod("team", "a", UID_A, ["main"])])
    plugin = ScriptedPlugin()
    source = PluginUsage(pods, plugin, clock=lambda: T0)
    plugin.answer = [usage(UID_A, "a", T0, main=(1_000_000_000, 1))]
    first = await source.usage()
    plugin.answer = [usage(UID_A, "a", T0 + timedelta(seconds=2), main=(2_000_000_000, 1))]
    second = await source.usage()
    assert first and second
    assert first.pods[0].containers[0].figures.cpu_nano_cores is None
    assert second.pods[0].containers[0].figures.cpu_nano_cores == 500_000_000


async def test_a_plugin_without_usage_means_no_report_and_a_failure_is_a_503() -> None:
    plugin = ScriptedPlugin()
    source = PluginUsage(StaticPods([running_pod("team", "a", UID_A, ["main"])]), plugin)
    plugin.error = UsageNotSupported(op="usage", status=404)
    assert await source.usage() is None
    plugin.error = TransientPluginError("connection refused", op="usage")
    with pytest.raises(BackendError) as caught:
        await source.usage()
    assert caught.value.status == 503


async def test_nothing_measured_yet_reports_no_node_figures_rather_than_zeros() -> None:
    report = await report_of([running_pod("team", "a", UID_A, ["main"])], [])
    assert report.node is None and report.pods == ()
    found = families(resource_metrics(report))
    assert found["node_cpu_usage_seconds"] == [] and found["container_cpu_usage_seconds"] == []


# ---- the routes ----------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def plugin() -> ScriptedPlugin:
    scripted = ScriptedPlugin()
    scripted.answer = [usage(UID_A, "burn", T0, main=(3_000_000_000, 64 * 2**20))]
    return scripted


@pytest.fixture
def reviews() -> InMemoryReviews:
    return InMemoryReviews(grants={"apiserver": {("get", "metrics"), ("get", "stats")}})


@pytest.fixture
async def server(env: Env, reviews: InMemoryReviews, plugin: ScriptedPlugin) -> AsyncIterator[KubeletServer]:
    pods = StaticPods([running_pod("team", "burn", UID_A, ["main"])])
    srv = KubeletServer(
        KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0),
        tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
        authority=RequestAuthority(reviews, NODE),
        pods=pods, logs=StaticLogs(b""), execs=SubprocessExec(), usage=PluginUsage(pods, plugin),
    )
    async with srv:
        yield srv


async def test_metrics_resource_is_served_as_prometheus_text(server: KubeletServer, env: Env) -> None:
    status, body, headers = await get(server, env, "/metrics/resource")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert families(body)["container_cpu_usage_seconds"][0].value == 3.0


async def test_stats_summary_is_served_as_json(server: KubeletServer, env: Env) -> None:
    status, body, _ = await get(server, env, "/stats/summary")
    assert status == 200
    assert json.loads(body)["pods"][0]["podRef"]["uid"] == UID_A


async def test_usage_paths_need_credentials_and_their_own_subresources(
    server: KubeletServer, env: Env, reviews: InMemoryReviews
) -> None:
    assert (await get(server, env, "/metrics/resource", anon=True))[0] == 401
    assert (await get(server, env, "/stats/summary", anon=True))[0] == 401
    reviews.grants["apiserver"] = {("get", "proxy")}  # nodes/proxy does not open /metrics or /stats
    status, body, _ = await get(server, env, "/metrics/resource")
    assert status == 403 and b"subresource=metrics" in body
    status, body, _ = await get(server, env, "/stats/summary")
    assert status == 403 and b"subresource=stats" in body


async def test_a_plugin_without_usage_gets_404_and_a_failing_one_503(
    server: KubeletServer, env: Env, plugin: ScriptedPlugin
) -> None:
    plugin.error = UsageNotSupported(op="usage", status=404)
    status, body, _ = await get(server, env, "/metrics/resource")
    assert status == 404 and b"reports no usage" in body
    plugin.error = TransientPluginError("socket gone", op="usage")
    assert (await get(server, env, "/stats/summary"))[0] == 503


async def test_a_server_without_a_usage_source_answers_404(env: Env, reviews: InMemoryReviews) -> None:
    srv = KubeletServer(KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0),
                        tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
                        authority=RequestAuthority(reviews, NODE), pods=StaticPods([]),
                        logs=StaticLogs(b""), execs=SubprocessExec())
    async with srv:
        assert (await get(srv, env, "/metrics/resource"))[0] == 404


async def test_each_kubelet_request_is_a_server_span_parenting_the_plugin_call(env: Env, reviews: InMemoryReviews) -> None:


    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[int] = []

    class TracingPlugin(ScriptedPlugin):
        async def usage(self, pods: Sequence[Mapping[str, Any]]) -> list[PodUsage]:
            seen.append(trace.get_current_span().get_span_context().span_id)
            return await super().usage(pods)

    pods = StaticPods([running_pod("team", "burn", UID_A, ["main"])])
    original = server_module._tracer
    server_module._tracer = provider.get_tracer("test")
    try:
        srv = KubeletServer(KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0),
                            tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
                            authority=RequestAuthority(reviews, NODE), pods=pods, logs=StaticLogs(b""),
                            execs=SubprocessExec(), usage=PluginUsage(pods, TracingPlugin()))
        async with srv:
            assert (await get(srv, env, "/metrics/resource"))[0] == 200
            assert (await get(srv, env, "/metrics/cadvisor"))[0] == 404
    finally:
        server_module._tracer = original
    first, second = exporter.get_finished_spans()
    assert (first.name, second.name) == ("GET /metrics", "GET /metrics")
    assert seen == [first.context.span_id]
    assert second.attributes["http.response.status_code"] == 404

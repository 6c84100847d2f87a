"""Trace context across the plugin boundary: the client injects `traceparent`, the server helper
continues it in a SERVER span that the backend's own spans hang from; and which OTEL_* settings turn
tracing on; and the client's per-call observer (metrics)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PodNotFound
from plugin_client.models import CreateStruct, RetrievedPodData
from plugin_client.server import make_app, start_server
from plugin_client.tracing import TracingConfigError, setup_tracing, tracing_requested
from tests.fakeplugin import FakeBackend

UID = "8d6f3c2a-1b4e-4f5a-9c7d-0e1f2a3b4c5d"
POD = {"metadata": {"name": "traced", "namespace": "team", "uid": UID}, "spec": {"containers": [{"name": "main"}]}}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class SubmittingBackend(FakeBackend):
    """Records its own span inside create, as a real plugin's SLURM command would."""

    def __init__(self, provider: TracerProvider) -> None:
        super().__init__()
        self.tracer = provider.get_tracer("backend")

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        with self.tracer.start_as_current_span("sbatch", kind=SpanKind.CLIENT):
            return await super().create(data)


async def test_one_trace_runs_from_the_caller_through_the_server_to_the_backend(
    spans: tuple[TracerProvider, InMemorySpanExporter], short_tmp: Path
) -> None:
    provider, exporter = spans
    server = await start_server(make_app(SubmittingBackend(provider), tracer_provider=provider), [f"unix://{short_tmp}/p.sock"])
    try:
        async with PluginClient(ClientConfig(Endpoint.parse(server.urls[0])), tracer_provider=provider) as client:
            with provider.get_tracer("agent").start_as_current_span("create pod team/traced"):
                await client.create(RetrievedPodData(pod=POD))
    finally:
        await server.close()
    finished = exporter.get_finished_spans()
    root = next(s for s in finished if s.name == "create pod team/traced")
    call = next(s for s in finished if s.name == "POST /create" and s.kind is SpanKind.CLIENT)
    served = next(s for s in finished if s.name == "POST /create" and s.kind is SpanKind.SERVER)
    sbatch = next(s for s in finished if s.name == "sbatch")
    assert len({root.context.trace_id, call.context.trace_id, served.context.trace_id, sbatch.context.trace_id}) == 1
    assert call.parent.span_id == root.context.span_id and call.kind is SpanKind.CLIENT
    assert served.parent.span_id == call.context.span_id and served.kind is SpanKind.SERVER
    assert sbatch.parent.span_id == served.context.span_id
    assert served.attributes["k8s.pod.uid"] == UID and served.attributes["http.response.status_code"] == 200
    assert served.attributes["interlink.session"].startswith("CreatePod#")


async def test_a_request_without_trace_context_starts_a_new_trace(
    spans: tuple[TracerProvider, InMemorySpanExporter], short_tmp: Path
) -> None:
    provider, exporter = spans
    server = await start_server(make_app(FakeBackend(), tracer_provider=provider), [f"unix://{short_tmp}/p.sock"])
    try:
        connector = aiohttp.UnixConnector(path=f"{short_tmp}/p.sock")
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.post("http://plugin/delete", json=POD) as response:
            assert response.status == 404  # the fake does not know the pod
    finally:
        await server.close()
    (served,) = exporter.get_finished_spans()
    assert served.parent is None and served.name == "POST /delete"
    assert served.attributes["http.response.status_code"] == 404


async def test_client_spans_record_plugin_failures(spans: tuple[TracerProvider, InMemorySpanExporter], short_tmp: Path) -> None:
    provider, exporter = spans
    server = await start_server(make_app(FakeBackend()), [f"unix://{short_tmp}/p.sock"])
    try:
        async with PluginClient(ClientConfig(Endpoint.parse(server.urls[0])), tracer_provider=provider) as client:
            with pytest.raises(PodNotFound):
                await client.delete(POD)
    finally:
        await server.close()
    (call,) = exporter.get_finished_spans()
    assert call.status.is_ok is False and call.attributes["http.response.status_code"] == 404


@pytest.mark.parametrize(
    ("env", "on"),
    [({}, False), ({"OTEL_TRACES_EXPORTER": "otlp"}, True), ({"OTEL_TRACES_EXPORTER": "none"}, False),
     ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
     ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
     ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
     ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
     ({"OTEL_TRACES_EXPORTER": "console"}, True)],
)
def test_tracing_is_off_unless_the_standard_variables_turn_it_on(env: dict[str, str], on: bool) -> None:
    assert tracing_requested(env) is on
    if not on:
        assert setup_tracing("x", env) is None


@pytest.mark.parametrize(
    ("env", "named"),
    [({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
     ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTEL_EXPORTER_OTLP_PROTOCOL")],
)
def test_settings_vnode_cannot_honour_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError) as caught:
        setup_tracing("x", env)
    assert named in str(caught.value)


async def test_the_observer_sees_every_call_with_its_outcome(short_tmp: Path) -> None:
    seen: list[tuple[str, str]] = []
    server = await start_server(make_app(FakeBackend()), [f"unix://{short_tmp}/p.sock"])
    try:
        client = PluginClient(ClientConfig(Endpoint.parse(server.urls[0])),
                              observer=lambda op, outcome, seconds: seen.append((op, outcome)) if seconds >= 0 else None)
        async with client:
            await client.create(RetrievedPodData(pod=POD))
            await client.status([POD])
            await client.delete(POD)
            with pytest.raises(PodNotFound):
                await client.delete(POD)
    finally:
        await server.close()
    assert seen == [("create", "ok"), ("status", "ok"), ("delete", "ok"), ("delete", "PodNotFound")]

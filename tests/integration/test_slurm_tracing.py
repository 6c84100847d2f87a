"""OpenTelemetry from a caller through the SLURM plugin process to sbatch, exported over OTLP/gRPC to
a collector run by the test (a grpcio server implementing opentelemetry-proto's TraceService Export).

The caller plays the agent: its spans go to the same collector from this process, its plugin client
injects the trace context; the plugin is configured only by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.models import RetrievedPodData
from tests.integration.test_slurm_plugin import Plugin, make_pod, running
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@dataclass
class Received:
    service: str
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    kind: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP TraceService: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(Received(str(resource.get("service.name", "")), span.name, span.trace_id, span.span_id,
                                               span.parent_span_id, span.kind, {a.key: _value(a.value) for a in span.attributes}))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def traced_plugin(plain_plugin: Plugin, collector: tuple[Collector, str]) -> AsyncIterator[Plugin]:  # noqa: F811
    plain_plugin.extra_env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collector[1],
                              "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": "slurm-plugin-under-test",
                              "OTEL_BSP_SCHEDULE_DELAY": "200"}
    await plain_plugin.stop()
    await plain_plugin.start()
    yield plain_plugin


async def test_one_trace_shows_caller_plugin_and_sbatch(traced_plugin: Plugin, collector: tuple[Collector, str]) -> None:
    received, endpoint = collector
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-under-test"}))
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    # Batch: exports from its own thread. A synchronous export from the event loop would wait on the
    # collector, which serves on this very loop.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    pod = make_pod("traced", containers=[{"name": "c", "image": "busybox", "command": ["sleep", "5"]}])
    try:
        async with PluginClient(ClientConfig(Endpoint.parse(f"unix://{traced_plugin.socket}")), tracer_provider=provider) as client:
            traced_plugin.pods.append(pod)  # the fixture deletes it at the end
            with provider.get_tracer("test-agent").start_as_current_span("create pod"):
                await client.create(RetrievedPodData(pod=pod))
        await traced_plugin.wait_for(pod, running, "the pod to run")
    finally:
        await asyncio.to_thread(provider.shutdown)  # the exporter's calls block: keep them off the loop

    root = next(s for s in received.spans if s.name == "create pod")
    for _ in range(100):  # the plugin's batch processor sends within OTEL_BSP_SCHEDULE_DELAY
        trace = [s for s in received.spans if s.trace_id == root.trace_id]
        if any(s.name == "sbatch" for s in trace):
            break
        await asyncio.sleep(0.1)
    by = {(s.service, s.name, s.kind): s for s in trace}
    client_kind, server_kind = 3, 2  # OTLP Span.SpanKind: SERVER = 2, CLIENT = 3
    call = by[("agent-under-test", "POST /create", client_kind)]
    served = by[("slurm-plugin-under-test", "POST /create", server_kind)]
    sbatch = by[("slurm-plugin-under-test", "sbatch", client_kind)]
    assert call.parent_id == root.span_id
    assert served.parent_id == call.span_id
    assert sbatch.parent_id == served.span_id
    assert served.attributes["k8s.pod.uid"] == pod["metadata"]["uid"]
    assert served.attributes["slurm.job.id"].isdigit()
    assert sbatch.attributes["vnode.slurm.outcome"] == "ok" and sbatch.attributes["process.exit.code"] == 0
    # Status polls are traced too, each with its squeue.
    assert any(s.service == "slurm-plugin-under-test" and s.name == "squeue" for s in received.spans)

"""OpenTelemetry from a caller through the SLURM plugin process to sbatch, exported over OTLP/gRPC to
a collector run by the test (a grpcio server implementing opentelemetry-proto's TraceService Export).

The caller plays the agent: its spans go to the same collector from this process, its plugin client
injects the trace context; the plugin is configured only by the standard OTEL_* variables. (The
collector lives in tests/otlp_support.py; test_observability_agent_tracing.py runs the real agent.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.models import RetrievedPodData
from tests.integration.test_slurm_plugin import Plugin, make_pod, running
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.otlp_support import Collector
from tests.otlp_support import collector as collector  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


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

"""One trace from the vnode agent through the real SLURM plugin to sbatch: the agent (in this
process, against the real testbed apiserver) exports its spans to an in-test OTLP/gRPC collector,
the plugin process is configured only by the standard OTEL_* variables and exports to the same
collector. The pod's `create pod` span holds the plugin client's `POST /create`, which the plugin's
SERVER span continues (traceparent), which holds `sbatch`; status cycles and the delete likewise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.agent_support import (
    kapply,
    kget,
    pod_manifest,
    running_agent,
    wait_default_service_account,
    wait_gone,
    wait_phase,
)
from tests.conftest import Testbed
from tests.integration.test_slurm_plugin import Plugin
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.otlp_support import CLIENT, INTERNAL, SERVER, Collector, Received
from tests.otlp_support import collector as collector  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

AGENT = "vnode-agent-under-test"
PLUGIN = "slurm-plugin-under-test"


@pytest.fixture
async def traced_slurm(plain_plugin: Plugin, collector: tuple[Collector, str]) -> AsyncIterator[Plugin]:  # noqa: F811
    plain_plugin.extra_env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collector[1],
                              "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": PLUGIN,
                              "OTEL_BSP_SCHEDULE_DELAY": "200"}
    await plain_plugin.stop()
    await plain_plugin.start()
    yield plain_plugin


@pytest.fixture
async def agent_tracing(collector: tuple[Collector, str]) -> AsyncIterator[TracerProvider]:  # noqa: F811
    """The agent's TracerProvider as setup_tracing builds it from OTEL_*, but not process-wide (other
    tests in this process keep the no-op default)."""
    provider = TracerProvider(resource=Resource.create({"service.name": AGENT}))
    # Batch: exports from its own thread; a synchronous export from the loop would wait on the
    # collector, which serves on this very loop.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector[1], insecure=True),
                                                   schedule_delay_millis=200))
    try:
        yield provider
    finally:
        await asyncio.to_thread(provider.shutdown)  # blocking flush: off the loop


def child(received: Collector, parent: Received, service: str, name: str, kind: int) -> Received | None:
    return next((s for s in received.children(parent) if (s.service, s.name, s.kind) == (service, name, kind)), None)


async def chain(received: Collector, top: Received, *links: tuple[str, str, int]) -> list[Received]:
    """Follow parent → child links from `top`, waiting for each span to arrive."""
    spans = [top]
    for service, name, kind in links:
        parent = spans[-1]
        spans.append(await received.wait_for(lambda p=parent, s=service, n=name, k=kind: child(received, p, s, n, k),
                                             f"{service} {name} below {parent.service} {parent.name}"))
    return spans


async def test_one_trace_shows_agent_create_plugin_and_sbatch(
        testbed: Testbed, namespace: str, traced_slurm: Plugin, collector: tuple[Collector, str],  # noqa: F811
        agent_tracing: TracerProvider) -> None:
    received = collector[0]
    await wait_default_service_account(testbed, namespace)
    config = {"InterlinkURL": f"unix://{traced_slurm.socket}"}
    async with running_agent(testbed, config=config, tracer_provider=agent_tracing) as agent:
        await kapply(testbed, pod_manifest("traced", namespace, agent.node, containers=[
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]))
        pod = await kget(testbed, "pod", "traced", "-n", namespace)
        assert pod is not None
        traced_slurm.pods.append(pod)  # the fixture cancels the job if the agent could not
        running = await wait_phase(testbed, namespace, "traced", "Running")
        uid, job_id = running["metadata"]["uid"], running["metadata"]["annotations"]["JobID"]

        create = await received.wait_for(lambda: next(
            (s for s in received.spans if (s.service, s.name, s.kind) == (AGENT, "create pod", INTERNAL)
             and s.attributes.get("k8s.pod.uid") == uid), None), "the agent's create pod span")
        assert create.parent_id == b""  # the root: nothing else started the create
        assert (create.attributes["k8s.pod.namespace"], create.attributes["k8s.pod.name"]) == (namespace, "traced")
        assert create.attributes["vnode.job.id"] == job_id
        _, call, served, sbatch = await chain(received, create, (AGENT, "POST /create", CLIENT),
                                              (PLUGIN, "POST /create", SERVER), (PLUGIN, "sbatch", CLIENT))
        assert len({s.trace_id for s in (create, call, served, sbatch)}) == 1
        assert served.attributes["k8s.pod.uid"] == uid and served.attributes["slurm.job.id"] == job_id
        assert sbatch.attributes["process.exit.code"] == 0

        # A status cycle asks the plugin, which asks squeue, all in the cycle's trace.
        cycle = await received.wait_for(lambda: next(
            (s for s in received.spans if s.service == AGENT and s.name == "status cycle"
             and child(received, s, AGENT, "GET /status", CLIENT) is not None), None), "a status cycle with its call")
        assert cycle.attributes["vnode.pods"] >= 1
        await chain(received, cycle, (AGENT, "GET /status", CLIENT), (PLUGIN, "GET /status", SERVER))

        await testbed.akubectl("-n", namespace, "delete", "pod", "traced", "--wait=false")
        await wait_gone(testbed, "pod", "traced", "-n", namespace)
        delete = await received.wait_for(lambda: next(
            (s for s in received.spans if s.service == AGENT and s.name == "delete pod"
             and s.attributes.get("k8s.pod.uid") == uid), None), "the agent's delete pod span")
        assert delete.attributes["vnode.job.id"] == job_id
        await chain(received, delete, (AGENT, "POST /delete", CLIENT), (PLUGIN, "POST /delete", SERVER),
                    (PLUGIN, "scancel", CLIENT))

"""The composition root: builds every part from Settings, runs them as named root tasks, and shuts
them down in a fixed order.

Start order: apiserver client and plugin client → health port (/healthz, /readyz, /metrics) and
event-loop lag monitor → event recorder → Node (first ping, apiserver version for its declared
features, then create or adopt) → Lease → job
ledger → pod informer (first LIST) → pod controller (reconcile with the ledger, workers) → status
poller → kubelet endpoint.

Shutdown (SIGTERM/SIGINT, or a root task dying): stop accepting kubelet connections → stop the
informer (no new work) → stop pod workers (an in-flight plugin call is cancelled; its pod is "in
doubt" and reconciled on the next start) → stop the status poller, node and lease loops → flush
queued events → close the plugin and apiserver clients. The Lease is simply left to expire; the
remote jobs keep running and are re-adopted by the next agent.

Root tasks are guarded: one that ends or raises stops the agent with exit code 1 (a supervisor —
Kubernetes, systemd — restarts it); per-pod work never reaches this level (the work queue
supervises it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin_client.client import ClientConfig, PluginClient, Timeouts
from plugin_client.endpoint import Endpoint, TLSSettings
from plugin_client.tracing import tracer_from
from vnode.kube.client import KubeClient, resource_of
from vnode.kube.compact import compact_pod
from vnode.kube.errors import Forbidden, Invalid, KubeError
from vnode.kube.events import EventRecorder
from vnode.kube.informer import WATCH_END_REASONS, Informer
from vnode.kube.resources import LeaseApi, NodeApi, ObjectApi, PodApi
from vnode.kube.retry import Backoff
from vnode.kube.version import server_version
from vnode.kubelet.endpoint import (
    EndpointOptions,
    KubeletEndpoint,
    start_kubelet_endpoint,
)
from vnode.node import nodestatus
from vnode.node.health_server import HealthServer
from vnode.node.lease_controller import LeaseController
from vnode.node.ledger import JobLedger
from vnode.node.looplag import LoopLagMonitor
from vnode.node.metrics import AgentMetrics, AgentSources
from vnode.node.node_controller import NodeController
from vnode.node.pod_controller import PodController
from vnode.settings import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1


def plugin_client_config(settings: Settings) -> ClientConfig:
    """The plugin client's config from vnode settings (interLink's keys)."""
    plugin = settings.plugin
    endpoint = Endpoint.parse(plugin.endpoint)
    tls = None
    if endpoint.scheme == "https":
        tls = TLSSettings(ca_file=Path(plugin.ca_cert) if plugin.ca_cert else None,
                          cert_file=Path(plugin.client_cert) if plugin.client_cert else None,
                          key_file=Path(plugin.client_key) if plugin.client_key else None,
                          insecure=plugin.insecure)
    # The ping timeout is its own setting, not the ping period: a short period must not make a
    # plugin that is merely slow under load look dead (NodeSettings.ping_timeout).
    timeouts = Timeouts(create=plugin.timeout, delete=min(60.0, plugin.timeout),
                        status=min(60.0, plugin.timeout), ping=settings.node.ping_timeout)
    return ClientConfig(endpoint=endpoint, dialect=plugin.dialect,  # type: ignore[arg-type]
                        token_file=Path(plugin.token_file) if plugin.token_file else None,
                        tls=tls, timeouts=timeouts,
                        job_script_url=plugin.jobscript_builder_url,
                        max_connections=max(64, settings.pods.workers * 2))


@dataclass
class Agent:
    """All long-lived parts, for tests and the kubelet wiring."""

    kube: KubeClient
    plugin: PluginClient
    recorder: EventRecorder
    node: NodeController
    lease: LeaseController
    ledger: JobLedger
    pods: PodController
    informer: Informer
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    kubelet: KubeletEndpoint | None = None
    health: HealthServer | None = None


class App:
    def __init__(self, settings: Settings, *, tracer_provider: Any = None) -> None:
        """`tracer_provider`: where the agent's spans go (None: the global one, which
        plugin_client.tracing.setup_tracing installs from OTEL_*; a no-op without it)."""
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.metrics = AgentMetrics()  # per App: several agents may share a process (tests)
        self.stopping = asyncio.Event()
        self.agent: Agent | None = None
        self.exit_code = EXIT_OK
        self._extra_stops: list[Callable[[], Awaitable[None]]] = []

    def request_stop(self, reason: str = "") -> None:
        if not self.stopping.is_set():
            log.info("stopping%s", f": {reason}" if reason else "")
            self.stopping.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)

    def _guard(self, name: str, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A named root task; if it ends while we are not stopping, the agent stops with 1."""
        assert self.agent is not None
        task = asyncio.ensure_future(coro)
        task.set_name(name)

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or self.stopping.is_set():
                return
            exc = t.exception()
            if exc is not None:
                log.error("root task %s crashed: %r", name, exc, exc_info=exc)
            else:
                log.error("root task %s ended unexpectedly", name)
            self.exit_code = EXIT_FAILED
            self.request_stop(f"root task {name} ended")

        task.add_done_callback(done)
        self.agent.tasks[name] = task
        return task

    async def _until_stopped(self, awaitable: Awaitable[Any]) -> Any:
        """Await `awaitable` unless a stop is requested first (then None)."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stop.cancel()
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    async def _start_node(self, node: NodeController) -> bool:
        """Register the node, retrying transient apiserver failures until stopped."""
        backoff = Backoff(base=1.0, factor=2.0, cap=30.0)
        attempt = 0
        while not self.stopping.is_set():
            try:
                await node.start()
                return True
            except (Forbidden, Invalid) as err:
                log.error("cannot register node %s: %s", node.name, err)
                self.exit_code = EXIT_FAILED
                return False
            except KubeError as err:
                delay = backoff.delay(attempt)
                attempt += 1
                log.warning("registering node %s failed (%s); retrying in %.0fs", node.name, err,
                            delay)
                await self._until_stopped(asyncio.sleep(delay))
        return False

    async def build(self) -> Agent:
        s = self.settings
        kube = await KubeClient.connect(s.kube.kubeconfig or None, qps=s.kube.qps, burst=s.kube.burst)
        plugin = PluginClient(plugin_client_config(s), tracer_provider=self.tracer_provider,
                              observer=self.metrics.observe_plugin_call)
        recorder = EventRecorder(kube, host=s.node.name)
        node = NodeController(NodeApi(kube), plugin, s, recorder=recorder,
                              server_version=lambda: server_version(kube))
        lease = LeaseController(LeaseApi(kube), s.node.name, lambda: node.uid,
                                duration=s.node.lease_duration, renew_period=s.node.lease_renew_period)
        objects = ObjectApi(kube)
        ledger = JobLedger(objects, s.pods.state_namespace, s.node.name)
        pods = PodController(PodApi(kube), objects, plugin, recorder, ledger, s,
                             node_allocatable=lambda: nodestatus.capacity(s, node.health.ping),
                             tracer=tracer_from(self.tracer_provider, "vnode"))
        node.on_health_change = lambda health: pods.on_plugin_health(health.reachable)
        informer = Informer(kube, "/api/v1/pods", pods.on_pod_event,
                            field_selector=f"spec.nodeName={s.node.name}", name="pod-informer",
                            transform=compact_pod)
        self.agent = Agent(kube, plugin, recorder, node, lease, ledger, pods, informer)
        self.metrics.sources = _sources(self.agent)
        return self.agent

    def add_stop_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Extra parts (the kubelet endpoint) stopped first at shutdown."""
        self._extra_stops.append(hook)

    async def run(self, *, install_signals: bool = True,
                  extra_start: Callable[[Agent], Awaitable[None]] | None = None) -> int:
        if install_signals:
            self._install_signals()
        agent = await self.build()
        try:
            if self.settings.health.port:
                agent.health = HealthServer(self.settings.health.address, self.settings.health.port)
                agent.health.add_get("/metrics", self.metrics.scrape)
                await agent.health.start()
                lag = LoopLagMonitor(self.metrics.observe_loop_lag)
                self._guard("loop-lag", lag.run())
            self._guard("events", agent.recorder.run())
            if self.settings.kubelet.enabled:
                await self._start_kubelet(agent)
            if not await self._start_node(agent.node):
                return self.exit_code
            self._guard("node", agent.node.run())
            self._guard("lease", agent.lease.run())
            self._guard("ledger", agent.ledger.run())
            self._guard("pod-informer", agent.informer.run())
            await self._until_stopped(agent.informer.synced.wait())
            if self.stopping.is_set():
                return self.exit_code
            loaded = await self._until_stopped(self._start_pods(agent))
            if loaded is None:
                return self.exit_code
            self._guard("pod-status", agent.pods.run_status())
            if extra_start is not None:
                await extra_start(agent)
            if agent.health is not None:
                agent.health.ready = True
            log.info("node %s is up: %d pods known, plugin %s (%s dialect)", self.settings.node.name,
                     len(agent.pods.records), self.settings.plugin.endpoint,
                     self.settings.plugin.dialect)
            await self.stopping.wait()
            return self.exit_code
        finally:
            await self.shutdown()

    async def _start_kubelet(self, agent: Agent) -> None:
        """The HTTPS kubelet endpoint (logs, exec, attach) before the Node is registered, so the
        Node advertises the port actually bound (KubeletPort 0 picks a free one)."""
        s = self.settings
        agent.kubelet = await start_kubelet_endpoint(s, agent.kube, agent.pods, agent.plugin,
                                                     EndpointOptions.from_settings(s))
        if agent.kubelet.port != s.kubelet.port:
            self.settings = dataclasses.replace(
                s, kubelet=dataclasses.replace(s.kubelet, port=agent.kubelet.port))
            agent.node.settings = self.settings

    async def _start_pods(self, agent: Agent) -> bool:
        backoff = Backoff(base=1.0, factor=2.0, cap=30.0)
        attempt = 0
        while True:
            try:
                await agent.pods.start()
                return True
            except KubeError as err:
                delay = backoff.delay(attempt)
                attempt += 1
                log.warning("reading the job ledger failed (%s); retrying in %.0fs", err, delay)
                await asyncio.sleep(delay)

    async def shutdown(self) -> None:
        agent = self.agent
        if agent is None:
            return
        self.stopping.set()
        if agent.kubelet is not None:
            with contextlib.suppress(Exception):
                await agent.kubelet.close()
        for hook in self._extra_stops:
            with contextlib.suppress(Exception):
                await hook()
        await self._cancel(agent, "pod-informer")
        await agent.pods.stop()
        for name in ("pod-status", "node", "lease", "ledger", "events", "loop-lag"):
            await self._cancel(agent, name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.recorder.flush(), timeout=5.0)
        log.info("apiserver requests sent: %s", ", ".join(
            f"{kind} {count}" for kind, count in sorted(agent.kube.requests.items())))
        await agent.plugin.close()
        await agent.kube.close()
        if agent.health is not None:  # last: probes stay green until the very end
            await agent.health.close()
        self.agent = None

    @staticmethod
    async def _cancel(agent: Agent, name: str) -> None:
        task = agent.tasks.get(name)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _watch_restarts(agent: Agent) -> dict[tuple[str, str], int]:
    """Watch restarts of every informer: pods, and CSRs when the agent approves its own."""
    informers = [agent.informer]
    if agent.kubelet is not None and agent.kubelet.approver is not None:
        informers.append(agent.kubelet.approver.informer)
    # Every reason of every informer is a series, also at 0: rate() works from the first restart.
    return {(resource_of(informer.path), reason): informer.watch_restarts[reason]
            for informer in informers for reason in WATCH_END_REASONS}


def _sources(agent: Agent) -> AgentSources:
    """The scrape-time figures of the agent's parts."""
    return AgentSources(
        pod_phases=agent.pods.phase_counts,
        plugin_reachable=lambda: agent.node.health.reachable,
        ping_failures=lambda: agent.node.ping_failures,
        lease_renew_failures=lambda: agent.lease.renew_failures,
        watch_restarts=lambda: _watch_restarts(agent),
        apiserver_requests=lambda: agent.kube.requests,
    )

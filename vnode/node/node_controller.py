"""The Node: registration (create or adopt), plugin health → Ready, and status writes.

Every `ping_period` (10 s) the plugin is pinged. Its answers decide Ready (False, with a message
naming the plugin and the error, after `ping_failure_threshold` failed pings in a row; True again
by itself at the first answer) and may update capacity and taints (interLink's PingResponse). The Node's status is patched when
something material changed, and at least every `status_report_period` (60 s) to refresh heartbeat
times; labels/taints are patched only when they differ, conditionally on the resourceVersion.

If the Node disappears (someone deleted it), the next write re-creates it; the lease controller
then re-points its Lease at the new Node.

status.declaredFeatures depends on the apiserver's version, read once at start (`server_version`):
an apiserver does not change version under a running agent without restarting its connections,
and re-reading it every period would cost a request per ping for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from plugin_client.errors import PluginError
from vnode import __version__
from vnode.kube.errors import AlreadyExists, Conflict, KubeError, NotFound
from vnode.kube.events import NORMAL, WARNING, EventRecorder, ObjectRef
from vnode.kube.resources import NodeApi
from vnode.kube.version import ServerVersion
from vnode.node import nodestatus
from vnode.node.nodestatus import PluginHealth
from vnode.node.podstatus import now_rfc3339
from vnode.provider import Provider
from vnode.settings import Settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class NodeController:
    def __init__(self, nodes: NodeApi, provider: Provider, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_health_change: Callable[[PluginHealth], None] | None = None,
                 recorder: EventRecorder | None = None,
                 server_version: Callable[[], Awaitable[ServerVersion | None]] | None = None
                 ) -> None:
        self.nodes = nodes
        self.server_version = server_version
        self.features: list[str] | None = None  # declaredFeatures, decided at start
        self.provider = provider
        self.settings = settings
        self.name = settings.node.name
        self.clock = clock
        self.health = PluginHealth.unknown(settings.plugin.endpoint)
        self.node: Obj | None = None
        self.on_health_change = on_health_change
        self.recorder = recorder
        self._last_status_write = float("-inf")
        self.ping_failures = 0  # consecutive failed pings
        self.status_writes = 0
        self.ready_event = asyncio.Event()  # set while the plugin answers pings

    @property
    def uid(self) -> str:
        return str((self.node or {}).get("metadata", {}).get("uid", ""))

    async def _ping(self) -> PluginHealth:
        endpoint = self.settings.plugin.endpoint
        try:
            ping = await self.provider.ping()
            return PluginHealth(True, endpoint, ping=ping)
        except PluginError as err:
            return PluginHealth(False, endpoint, error=str(err))
        except Exception as err:  # a plugin bug must not stop the node heartbeat
            log.exception("ping of plugin %s failed unexpectedly", endpoint)
            return PluginHealth(False, endpoint, error=f"{type(err).__name__}: {err}")

    async def check_plugin(self) -> PluginHealth:
        endpoint = self.settings.plugin.endpoint
        observed = await self._ping()
        threshold = self.settings.node.ping_failure_threshold
        health, self.ping_failures = nodestatus.debounced_health(self.health, observed,
                                                                 self.ping_failures, threshold)
        if health is not observed:
            log.warning("ping of plugin %s failed (%d of %d in a row before NotReady): %s",
                        endpoint, self.ping_failures, threshold, observed.error)
        changed = health.reachable != self.health.reachable
        if changed:
            if health.reachable:
                log.info("plugin %s is reachable; node %s Ready", endpoint, self.name)
            else:
                log.warning("plugin %s unreachable (%s); node %s NotReady", endpoint,
                            health.error, self.name)
        self.health = health
        if health.reachable:
            self.ready_event.set()
        else:
            self.ready_event.clear()
        if changed and self.on_health_change is not None:
            self.on_health_change(health)
        if changed and self.recorder is not None and self.node is not None:
            # Like the kubelet's NodeReady/NodeNotReady events; the kubelet uses the node name
            # as the involved object's uid.
            ref = ObjectRef("Node", "", self.name, self.name)
            if health.reachable:
                self.recorder.emit(ref, NORMAL, "NodeReady", f"plugin {endpoint} answers again")
            else:
                self.recorder.emit(ref, WARNING, "NodeNotReady",
                                   f"plugin {endpoint} is unreachable: {health.error}")
        return health

    async def register(self) -> Obj:
        """Create the Node, or adopt an existing one (labels, taints, status brought in line)."""
        node = await self.nodes.get(self.name)
        if node is None:
            try:
                node = await self.nodes.create(nodestatus.new_node(
                    self.settings, self.health, now_rfc3339(), __version__, self.features or ()))
                log.info("registered node %s (uid %s)", self.name, node["metadata"]["uid"])
                self.node = node
                self._last_status_write = self.clock()
                return node
            except AlreadyExists:
                node = await self.nodes.get(self.name)
                if node is None:
                    raise
        log.info("adopting existing node %s (uid %s)", self.name, node["metadata"]["uid"])
        self.node = node
        await self.sync(force=True)
        assert self.node is not None
        return self.node

    async def sync(self, *, force: bool = False) -> None:
        """Bring the Node's labels/taints and status in line with the current health."""
        if self.node is None:
            await self.register()
            return
        try:
            await self._sync_meta()
            await self._sync_status(force)
        except NotFound:
            log.warning("node %s was deleted; registering it again", self.name)
            self.node = None
            await self.register()

    async def _sync_meta(self) -> None:
        for _ in range(5):
            assert self.node is not None
            patch = nodestatus.meta_patch(self.node, self.settings, self.health.ping)
            if patch is None:
                return
            try:
                self.node = await self.nodes.patch(self.name, patch)
                return
            except Conflict:
                fresh = await self.nodes.get(self.name)
                if fresh is None:
                    raise NotFound(f"node {self.name} not found") from None
                self.node = fresh
        log.warning("node %s: taints kept changing under us; retrying next period", self.name)

    async def _sync_status(self, force: bool) -> None:
        assert self.node is not None
        due = force or self.clock() - self._last_status_write >= self.settings.node.status_report_period
        desired = nodestatus.desired_status(self.settings, self.health, now_rfc3339(), __version__,
                                            self.node.get("status"), self.features or ())
        patch = nodestatus.status_patch(self.node, desired, heartbeat=due)
        if patch is None:
            return
        self.node = await self.nodes.patch_status(self.name, patch)
        self._last_status_write = self.clock()
        self.status_writes += 1
        self._check_features_kept(desired)

    def _check_features_kept(self, desired: Obj) -> None:
        """Stop declaring what the apiserver dropped (its NodeDeclaredFeatures gate turned off on
        1.36+): the stored Node would otherwise differ from ours forever and every check patch."""
        wanted = desired.get("declaredFeatures") or []
        stored = (self.node or {}).get("status", {}).get("declaredFeatures") or []
        if wanted and stored != wanted:
            log.warning("node %s: the apiserver did not keep status.declaredFeatures %s (its "
                        "NodeDeclaredFeatures gate is off?); declaring nothing from now on",
                        self.name, wanted)
            self.features = []

    async def run(self) -> None:
        """Ping and sync forever. Registration happened in `start`."""
        period = self.settings.node.ping_period
        while True:
            started = self.clock()
            await self.check_plugin()
            try:
                await self.sync()
            except KubeError as err:
                log.warning("updating node %s failed: %s", self.name, err)
            await asyncio.sleep(max(0.0, period - (self.clock() - started)))

    async def decide_features(self) -> list[str]:
        """declaredFeatures for this apiserver, read once (a failed read raises and is retried
        with the registration)."""
        if self.features is None:
            server = await self.server_version() if self.server_version is not None else None
            self.features = nodestatus.declared_features(self.settings, server)
            log.info("node %s: apiserver version %s; declaring features %s", self.name,
                     server or "unknown", self.features or "none")
        return self.features

    async def start(self) -> None:
        """First ping, then registration: the Node appears with the right Ready (and declared
        features) from the start."""
        await self.check_plugin()
        await self.decide_features()
        await self.register()

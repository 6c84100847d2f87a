"""The node's heartbeat: a coordination.k8s.io/v1 Lease in kube-node-lease, as the kubelet keeps it.

40 s duration renewed every 10 s, holder = node name, owned by the Node (so it is garbage-collected
with it). Renewal is an optimistic PUT from the last lease seen; on Conflict it re-reads and retries,
on NotFound (deleted, or garbage-collected after the Node was recreated) it creates a new one.
The lease keeps being renewed while the plugin is down: liveness of the *agent* is what the lease
says; plugin health is the Ready condition's job (so a plugin outage does not look like a dead
node to the KCM, whose unreachable taint would evict every pod after 5 minutes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vnode.kube.errors import Conflict, KubeError, NotFound
from vnode.kube.resources import LeaseApi

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# client-go's nodelease retries a conflicting update this many times before waiting a period.
MAX_UPDATE_RETRIES = 5


def micro_time(moment: datetime | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseController:
    def __init__(self, leases: LeaseApi, node_name: str, owner_uid: Callable[[], str], *,
                 duration: int = 40, renew_period: float = 10.0) -> None:
        self.leases = leases
        self.node_name = node_name
        self.owner_uid = owner_uid
        self.duration = duration
        self.renew_period = renew_period
        self.lease: Obj | None = None
        self.renewals = 0
        self.renew_failures = 0  # renewals given up until the next period (metrics)

    def _new_lease(self) -> Obj:
        uid = self.owner_uid()
        meta: Obj = {"name": self.node_name, "namespace": self.leases.namespace}
        if uid:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                        "name": self.node_name, "uid": uid}]
        now = micro_time()
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": self.duration,
                         "renewTime": now, "acquireTime": now}}

    async def renew(self) -> None:
        """One renewal (creating the lease if needed)."""
        for _ in range(MAX_UPDATE_RETRIES):
            if self.lease is None:
                self.lease = await self.leases.get(self.node_name)
                if self.lease is None:
                    try:
                        self.lease = await self.leases.create(self._new_lease())
                        self.renewals += 1
                        return
                    except Conflict:  # created concurrently; read it and update
                        continue
            lease = dict(self.lease)
            spec = dict(lease.get("spec") or {})
            spec.update({"holderIdentity": self.node_name, "leaseDurationSeconds": self.duration,
                         "renewTime": micro_time()})
            lease["spec"] = spec
            uid = self.owner_uid()
            refs = lease.get("metadata", {}).get("ownerReferences") or []
            if uid and not any(r.get("uid") == uid for r in refs):
                # The Node was recreated: point the lease at the new one.
                meta = dict(lease["metadata"])
                meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                            "name": self.node_name, "uid": uid}]
                lease["metadata"] = meta
            try:
                self.lease = await self.leases.update(lease)
                self.renewals += 1
                return
            except Conflict:
                self.lease = None
            except NotFound:
                self.lease = None
        raise KubeError(f"lease {self.node_name}: {MAX_UPDATE_RETRIES} conflicting updates in a row")

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
            except KubeError as err:
                self.renew_failures += 1
                log.warning("renewing lease %s failed: %s", self.node_name, err)
            await asyncio.sleep(self.renew_period)

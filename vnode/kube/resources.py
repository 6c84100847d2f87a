"""Typed helpers over `KubeClient` for the objects the agent reads and writes.

Each method is one apiserver call (plus the client's retries) with the agent's conventions baked in:
pod status as a strategic-merge patch with a uid precondition, force deletes with grace 0 and a uid
precondition, 404 on a read turned into None where "absent" is a normal answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from vnode.kube.client import MERGE_PATCH, STRATEGIC_MERGE_PATCH, KubeClient
from vnode.kube.errors import Conflict, NotFound
from vnode.kube.types import ConfigMap, Pod, Secret

Obj = dict[str, Any]


def without_managed_fields(obj: Obj) -> Obj:
    """`obj` without `metadata.managedFields` (in place). Server-side-apply bookkeeping that
    nothing in the agent or a plugin reads, and over a third of a pod's bytes: dropping it from
    cached pods is what client-go's informers offer as a transform, for the same reason."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _q(segment: str) -> str:
    return quote(segment, safe="")


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}"


class PodApi:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def get(self, namespace: str, name: str) -> Pod | None:
        try:
            pod: Pod = await self.client.get(pod_path(namespace, name))
        except NotFound:
            return None
        return pod

    async def patch_status(self, namespace: str, name: str, patch: Obj) -> Pod:
        """SMP on pods/status; the patch carries metadata.uid, so a recreated pod of the same
        name is refused instead of receiving a stranger's status. pods/status also takes
        metadata changes (annotations), so one patch can carry the JobID annotation too.
        Returns the pod as the informer would cache it (without managedFields)."""
        pod: Obj = await self.client.patch(pod_path(namespace, name) + "/status", patch,
                                           content_type=STRATEGIC_MERGE_PATCH)
        return without_managed_fields(pod)  # type: ignore[return-value]

    async def delete_now(self, namespace: str, name: str, uid: str) -> None:
        """Remove the API object: grace period 0 with a uid precondition (what the kubelet does
        once the containers are gone). NotFound means it is already gone; Conflict means the name
        now belongs to a new pod (the precondition protected it). Both are fine."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        try:
            await self.client.delete(pod_path(namespace, name), body)
        except (NotFound, Conflict):
            pass


class NodeApi:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def get(self, name: str) -> Obj | None:
        try:
            node: Obj = await self.client.get(f"/api/v1/nodes/{_q(name)}")
        except NotFound:
            return None
        return node

    async def create(self, node: Obj) -> Obj:
        created: Obj = await self.client.post("/api/v1/nodes", node)
        return created

    async def patch(self, name: str, patch: Obj) -> Obj:
        """Merge patch of metadata/spec (labels, taints); include metadata.resourceVersion in the
        patch to make it conditional."""
        node: Obj = await self.client.patch(f"/api/v1/nodes/{_q(name)}", patch,
                                            content_type=MERGE_PATCH)
        return node

    async def patch_status(self, name: str, patch: Obj) -> Obj:
        node: Obj = await self.client.patch(f"/api/v1/nodes/{_q(name)}/status", patch,
                                            content_type=STRATEGIC_MERGE_PATCH)
        return node


class LeaseApi:
    def __init__(self, client: KubeClient, namespace: str = "kube-node-lease") -> None:
        self.client = client
        self.namespace = namespace

    def _path(self, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{_q(self.namespace)}/leases"
        return f"{base}/{_q(name)}" if name else base

    async def get(self, name: str) -> Obj | None:
        try:
            lease: Obj = await self.client.get(self._path(name))
        except NotFound:
            return None
        return lease

    async def create(self, lease: Obj) -> Obj:
        created: Obj = await self.client.post(self._path(), lease)
        return created

    async def update(self, lease: Obj) -> Obj:
        """PUT with the lease's resourceVersion: Conflict if someone else wrote it meanwhile."""
        updated: Obj = await self.client.put(self._path(lease["metadata"]["name"]), lease)
        return updated


class ObjectApi:
    """ConfigMaps, Secrets and service-account tokens a pod references."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def get_configmap(self, namespace: str, name: str) -> ConfigMap | None:
        try:
            cm: ConfigMap = await self.client.get(
                f"/api/v1/namespaces/{_q(namespace)}/configmaps/{_q(name)}")
        except NotFound:
            return None
        return cm

    async def get_secret(self, namespace: str, name: str) -> Secret | None:
        try:
            secret: Secret = await self.client.get(
                f"/api/v1/namespaces/{_q(namespace)}/secrets/{_q(name)}")
        except NotFound:
            return None
        return secret

    async def create_configmap(self, namespace: str, cm: Obj) -> Obj:
        created: Obj = await self.client.post(f"/api/v1/namespaces/{_q(namespace)}/configmaps", cm)
        return created

    async def update_configmap(self, namespace: str, cm: Obj) -> Obj:
        name = cm["metadata"]["name"]
        updated: Obj = await self.client.put(
            f"/api/v1/namespaces/{_q(namespace)}/configmaps/{_q(name)}", cm)
        return updated

    async def request_token(self, namespace: str, service_account: str, *, pod_name: str,
                            pod_uid: str, expiration_seconds: int, audience: str = "") -> Obj:
        """TokenRequest bound to the pod: the token dies with the pod, like the kubelet's."""
        spec: Obj = {"expirationSeconds": expiration_seconds,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                                        "uid": pod_uid}}
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        result: Obj = await self.client.post(
            f"/api/v1/namespaces/{_q(namespace)}/serviceaccounts/{_q(service_account)}/token", body)
        return result

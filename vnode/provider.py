"""The narrow boundary between the node core and a backend: what `vnode.node` may ask a plugin.

`plugin_client.PluginClient` implements it for real plugins (and for an interLink API server);
unit tests implement it in memory. Errors crossing it are `plugin_client.errors`: transient
(retry), permanent (fail the pod with the plugin's message), PodNotFound (on delete: already gone)
and WireFormatError (a malformed answer: an event on the pod, never a crash).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from plugin_client.models import CreateStruct, PingResponse, PodStatus, RetrievedPodData


class Provider(Protocol):
    async def create(self, data: RetrievedPodData) -> CreateStruct:
        """Submit one pod; the answer carries the remote job id."""
        ...

    async def delete(self, pod: Mapping[str, Any]) -> None:
        """Delete a pod's remote job; PodNotFound if the plugin does not know it."""
        ...

    async def status(self, pods: Sequence[Mapping[str, Any]]) -> list[PodStatus]:
        """The statuses of many pods in one call (pods the plugin does not know are absent)."""
        ...

    async def ping(self) -> PingResponse | None:
        """Raises when the plugin is unhealthy; may report capacity and taints."""
        ...

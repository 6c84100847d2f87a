"""Kubernetes Events (core/v1) for `kubectl describe`, deduplicated like client-go's recorder.

`emit()` never blocks and never fails: events are queued and written by one background task, so a
slow or failing apiserver delays events, never pod work. They are also the apiserver client's
*background* requests (sent only while no pod create/status request is in flight) and have their
own rate limit, like the kubelet's separate event QPS: during a burst of thousands of pods the
`Submitted` events follow the statuses instead of competing with them. An event identical to a recent one (same
object, type, reason and message) is not created again: the existing Event's `count` and
`lastTimestamp` are patched instead, which is what `kubectl describe` shows as "(x5 over 2m)".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from plugin_client.logformat import pod_fields, pod_fields_of
from vnode.kube.client import MERGE_PATCH, KubeClient
from vnode.kube.errors import Forbidden, KubeError, NotFound
from vnode.kube.ratelimit import TokenBucket

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
COMPONENT = "vnode"
# The apiserver rejects event messages above 1 KiB... it does not, but kubectl and etcd suffer;
# client-go truncates at 1024 characters, so do we.
MAX_MESSAGE = 1024
# 50 events/s, bursts of 100: the kubelet's eventRecordQPS/eventBurst, on top of the background lane.
EVENT_QPS = 50.0
EVENT_BURST = 100


def _namespace_gone(err: KubeError) -> bool:
    text = str(err)
    return (isinstance(err, NotFound) and "namespaces" in text) or \
        (isinstance(err, Forbidden) and "being terminated" in text)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = "v1"

    @classmethod
    def of(cls, obj: Mapping[str, Any], kind: str = "Pod") -> ObjectRef:
        meta = obj.get("metadata", {})
        return cls(kind=obj.get("kind") or kind, namespace=meta.get("namespace", ""),
                   name=meta.get("name", ""), uid=meta.get("uid", ""),
                   api_version=obj.get("apiVersion") or "v1")

    def to_k8s(self) -> dict[str, str]:
        ref = {"kind": self.kind, "name": self.name, "uid": self.uid, "apiVersion": self.api_version}
        if self.namespace:
            ref["namespace"] = self.namespace
        return ref


@dataclass(frozen=True)
class PendingEvent:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    timestamp: str
    # `extra=` of the lines about the event's pod (logformat.pod_fields); empty for other objects.
    log_fields: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int


def _pod_log_fields(obj: Mapping[str, Any] | ObjectRef, ref: ObjectRef, job_id: str) -> dict[str, str]:
    """``extra=`` of an event's log lines: the pod's fields (logformat.pod_fields), none for other kinds."""
    if ref.kind != "Pod":
        return {}
    if isinstance(obj, ObjectRef):
        return pod_fields(ref.namespace, ref.name, ref.uid, job_id)
    return pod_fields_of(obj, job_id)


class EventRecorder:
    """Queue-backed event writer with client-go-like deduplication."""

    def __init__(self, client: KubeClient, *, host: str, max_queue: int = 10000,
                 cache_size: int = 4096, clock: Callable[[], str] = _now) -> None:
        self.client = client
        self.host = host
        self.clock = clock
        # 10000 queued events ≈ a burst of thousands of pods; beyond that events are dropped
        # (and logged) rather than growing memory without bound.
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(maxsize=max_queue)
        # 4096 like client-go's event correlator LRU.
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._cache_size = cache_size
        self.bucket = TokenBucket(EVENT_QPS, EVENT_BURST)
        self.dropped = 0
        self.written = 0
        # A pod's job id by uid, for the log lines (the pod controller sets it: it knows the id
        # before the pod's JobID annotation is written); the annotation is the fallback.
        self.job_id_of: Callable[[str], str] = lambda uid: ""

    def emit(self, obj: Mapping[str, Any] | ObjectRef, type_: str, reason: str, message: str) -> None:
        ref = obj if isinstance(obj, ObjectRef) else ObjectRef.of(obj)
        fields = _pod_log_fields(obj, ref, self.job_id_of(ref.uid) if ref.kind == "Pod" else "")
        event = PendingEvent(ref, type_, reason, message[:MAX_MESSAGE], self.clock(), fields)
        log.log(logging.WARNING if type_ == WARNING else logging.INFO, "event %s %s/%s: %s: %s",
                type_, ref.namespace, ref.name, reason, message, extra=fields)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:  # the first drop, then every 1000th: no log storm
                log.warning("event queue full (%d events waiting for the apiserver): %d events "
                            "dropped so far", self._queue.qsize(), self.dropped)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self.write(event)
            except KubeError as err:
                # An event for a namespace being deleted (its pods went first) is expected noise.
                level = logging.DEBUG if _namespace_gone(err) else logging.WARNING
                log.log(level, "could not write event %s for %s/%s: %s", event.reason,
                        event.ref.namespace, event.ref.name, err, extra=event.log_fields)

    async def flush(self) -> None:
        """Write everything queued now (used at shutdown and in tests)."""
        while not self._queue.empty():
            event = self._queue.get_nowait()
            try:
                await self.write(event)
            except KubeError as err:
                log.warning("could not write event %s: %s", event.reason, err, extra=event.log_fields)

    async def write(self, event: PendingEvent) -> None:
        await self.bucket.acquire()
        key = (event.ref.uid, event.type, event.reason, event.message)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            seen.count += 1
            path = f"/api/v1/namespaces/{quote(seen.namespace, safe='')}/events/{quote(seen.name, safe='')}"
            try:
                await self.client.patch(path, {"count": seen.count, "lastTimestamp": event.timestamp},
                                        content_type=MERGE_PATCH, background=True)
                self.written += 1
                return
            except NotFound:
                del self._seen[key]  # expired (events live 1 h); create a fresh one
        namespace = event.ref.namespace or "default"
        name = f"{event.ref.name}.{secrets.token_hex(8)}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": event.ref.to_k8s(),
            "reason": event.reason, "message": event.message, "type": event.type,
            "source": {"component": COMPONENT, "host": self.host},
            "firstTimestamp": event.timestamp, "lastTimestamp": event.timestamp, "count": 1,
            "reportingComponent": COMPONENT, "reportingInstance": self.host,
        }
        await self.client.post(f"/api/v1/namespaces/{quote(namespace, safe='')}/events", body,
                               background=True)
        self.written += 1
        self._seen[key] = _Seen(name, namespace, 1)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)

"""A list-watch cache (client-go's reflector + store) for one kind of object, keyed by uid.

The loop is: LIST (paginated) → "synced" → WATCH from the list's resourceVersion with bookmarks →
on a dropped or silent connection, WATCH again from the last resourceVersion seen (objects or
bookmarks) → on 410 Gone, LIST again and diff the new list against the cache, emitting the ADDED,
MODIFIED and DELETED events the watch missed. So a consumer sees every change, also across apiserver
restarts and etcd compactions; changes that happened and were undone while disconnected collapse
into the final state, as in client-go.

Objects are keyed by `metadata.uid`, not by name: a pod deleted and recreated under the same name is
a different pod, and the relist diff reports it as a DELETED of the old uid plus an ADDED of the new.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugin_client.logformat import pod_fields_of
from vnode.kube.client import KubeClient
from vnode.kube.errors import Gone, KubeError
from vnode.kube.retry import Backoff

log = logging.getLogger(__name__)

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
# Why a watch ended before the next one started (Informer.watch_restarts' keys).
WATCH_END_REASONS = ("closed", "expired", "error")

Obj = dict[str, Any]
Handler = Callable[[str, Obj], None]
Transform = Callable[[Obj], Obj]


def uid_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def rv_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def diff_relist(cache: dict[str, Obj], items: list[Obj]) -> list[tuple[str, Obj]]:
    """The events that turn `cache` into `items`: what a watch would have told us.

    Unchanged objects (same resourceVersion) produce nothing. Deletions come first so a consumer
    sees a recreated name's old uid go away before the new one appears.
    """
    fresh = {uid_of(o): o for o in items}
    events: list[tuple[str, Obj]] = [(DELETED, old) for uid, old in cache.items() if uid not in fresh]
    for uid, obj in fresh.items():
        old = cache.get(uid)
        if old is None:
            events.append((ADDED, obj))
        elif rv_of(old) != rv_of(obj):
            events.append((MODIFIED, obj))
    return events


@dataclass
class InformerSettings:
    """Timings of the list-watch loop."""

    # Server-side watch timeout, randomised per watch (like client-go's 5-10 min, but shorter):
    # each reconnect is cheap and bounds how long a half-open connection can go unnoticed.
    watch_timeout_min: int = 60
    watch_timeout_max: int = 120
    # No byte for this long means the connection is dead (the server ends idle watches itself at
    # watch_timeout_max and sends bookmarks meanwhile).
    inactivity_timeout: float = 150.0
    # Page size of LIST: keeps one response small on nodes with thousands of pods.
    page_size: int = 500
    # Reconnect backoff after failures; capped so recovery after an apiserver restart is quick.
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.2, factor=2.0, cap=5.0))


class Informer:
    """Keeps `cache` equal to the apiserver's view of `path` filtered by `field_selector`.

    `handler(event_type, obj)` is called synchronously, in order, for every change; it must not
    block (controllers enqueue work and return). `transform` is applied to every object as it
    arrives, before it is cached or handed on (client-go's TransformFunc: e.g. dropping
    managedFields, so thousands of cached pods cost less memory).
    """

    def __init__(self, client: KubeClient, path: str, handler: Handler, *,
                 field_selector: str = "", label_selector: str = "",
                 settings: InformerSettings | None = None, name: str = "informer",
                 transform: Transform | None = None) -> None:
        self.client = client
        self.path = path
        self.handler = handler
        self.transform = transform
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.settings = settings or InformerSettings()
        self.name = name
        self.cache: dict[str, Obj] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        # Observability for tests and metrics: how often each recovery path ran.
        self.lists = 0
        self.watches = 0
        self.relists_after_gone = 0
        # Why each watch ended before the next one started: "closed" (the server's timeout, the
        # normal end), "expired" (410, relist), "error" (connection or apiserver failure).
        self.watch_restarts: Counter[str] = Counter()

    def _selectors(self) -> list[tuple[str, str]]:
        q: list[tuple[str, str]] = []
        if self.field_selector:
            q.append(("fieldSelector", self.field_selector))
        if self.label_selector:
            q.append(("labelSelector", self.label_selector))
        return q

    async def list_all(self) -> tuple[list[Obj], str]:
        """A consistent paginated LIST; returns the items and the list's resourceVersion."""
        items: list[Obj] = []
        cont = ""
        while True:
            query = self._selectors() + [("limit", str(self.settings.page_size))]
            if cont:
                query.append(("continue", cont))
            try:
                page = await self.client.get(self.path, query=query)
            except Gone:
                # The continue token expired mid-list: start over from a fresh snapshot.
                items, cont = [], ""
                continue
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion", ""))

    async def relist(self) -> None:
        items, rv = await self.list_all()
        self.lists += 1
        kind = self._item_kind()
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        for item in items:
            # LIST items lack kind/apiVersion; add them so cached objects look like watched ones.
            if kind:
                item.setdefault("kind", kind[0])
                item.setdefault("apiVersion", kind[1])
        events = diff_relist(self.cache, items)
        self.cache = {uid_of(o): o for o in items}
        self.resource_version = rv
        for etype, obj in events:
            self._dispatch(etype, obj)
        self.synced.set()

    def _item_kind(self) -> tuple[str, str] | None:
        if self.path.endswith("/pods"):
            return ("Pod", "v1")
        return None

    def _dispatch(self, etype: str, obj: Obj) -> None:
        try:
            self.handler(etype, obj)
        except Exception:  # a consumer bug must not stop the cache from following the server
            fields = pod_fields_of(obj) if self._item_kind() == ("Pod", "v1") else {}
            log.exception("%s: handler failed on %s %s", self.name, etype, uid_of(obj), extra=fields)

    def apply(self, etype: str, obj: Obj) -> None:
        """Apply one watch event to the cache and pass it on."""
        if etype == "BOOKMARK":
            self.resource_version = rv_of(obj) or self.resource_version
            return
        if self.transform is not None:
            obj = self.transform(obj)
        uid = uid_of(obj)
        self.resource_version = rv_of(obj) or self.resource_version
        if etype == DELETED:
            self.cache.pop(uid, None)
        elif etype in (ADDED, MODIFIED):
            self.cache[uid] = obj
        else:
            log.warning("%s: ignoring unknown watch event type %r", self.name, etype)
            return
        self._dispatch(etype, obj)

    async def watch_once(self) -> None:
        """One WATCH request from the current resourceVersion, until the server ends it."""
        timeout = random.randint(self.settings.watch_timeout_min, self.settings.watch_timeout_max)
        query = self._selectors() + [
            ("watch", "1"),
            ("resourceVersion", self.resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        self.watches += 1
        async for event in self.client.watch(self.path, query,
                                             inactivity_timeout=self.settings.inactivity_timeout):
            obj = event.get("object")
            if isinstance(obj, dict):
                self.apply(str(event.get("type")), obj)

    async def run(self) -> None:
        """Follow the server forever (until cancelled)."""
        need_list = True
        failures = 0
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                await self.watch_once()
                failures = 0
                self.watch_restarts["closed"] += 1
            except Gone:
                log.info("%s: resourceVersion %s expired; relisting", self.name, self.resource_version)
                self.relists_after_gone += 1
                self.watch_restarts["expired"] += 1
                need_list = True
            except KubeError as err:
                delay = self.settings.backoff.delay(failures)
                failures += 1
                self.watch_restarts["error"] += 1
                log.warning("%s: %s; retrying in %.1fs", self.name, err, delay)
                await asyncio.sleep(delay)

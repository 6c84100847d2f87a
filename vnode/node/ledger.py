"""The job ledger: a durable record, in ConfigMaps, of every pod this node may have submitted.

Why: the plugin API has no "list jobs" call, and a pod can vanish from the apiserver while the agent
is down (force-deleted, or removed by the pod GC after its Node was deleted). Without a record such
a pod's remote job would run forever. So before a pod's first `/create` the agent durably records
`uid → namespace/name(/job id)`; on start it deletes remotely every recorded pod the apiserver no
longer has, and the entry is dropped once the plugin confirms the delete.

The entry is also the create *intent*: a pod that has an entry but no JobID annotation may have
been created just before a crash (`kill -9` between the plugin's answer and the annotation write).
The agent then asks the plugin's status for that uid before submitting again, so a pod is never
submitted twice.

Layout, in the state namespace (data key = pod uid, value = compact JSON):
* `vnode-jobs-<node>-intents`, the journal: create intents not yet confirmed. Small (about as
  many entries as creates in flight), so the write every create waits for stays cheap however
  many pods the node holds.
* `vnode-jobs-<node>-<shard>` (shard = first hex digit of the uid modulo `shards`): the entries
  of submitted pods, with their job ids. One ConfigMap holds ~8000 entries (1 MiB limit), so 4
  shards cover the 10000-pod default capacity with room to spare.
Once the plugin has answered, the entry moves from the journal to its shard: first written to the
shard, and only after that write succeeded dropped from the journal, so at every moment at least
one of them holds it. On load, an entry found only in the journal is an intent (in doubt).

Writes are group-committed: `record()` waits until its intent is stored, but all changes that
arrive while a write is in flight go out together in the next one. Changes nobody waits for (a job
id learned after the create, a forgotten entry) linger up to `LAZY_LINGER` seconds and then go
out together, or earlier with the next eager write to the same ConfigMap, so a burst of 1000
creates costs a few hundred small journal writes (fewer the busier the apiserver: one write is in
flight at a time) and a handful per shard.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from plugin_client.logformat import pod_fields
from vnode.kube.errors import AlreadyExists, Conflict, KubeError, NotFound
from vnode.kube.resources import ObjectApi

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Lazy changes are only needed after a crash (a job id for a remote delete, a stale entry that
# costs one harmless extra delete); a couple of seconds of delay is free and merges many writes.
LAZY_LINGER = 2.0


@dataclass(frozen=True)
class LedgerEntry:
    uid: str
    namespace: str
    name: str
    job_id: str = ""
    # Unix time the create intent was recorded: after a crash, a create younger than the plugin
    # timeout may still be in flight on the plugin's side.
    created: float = 0.0

    def encode(self) -> str:
        data: dict[str, Any] = {"ns": self.namespace, "name": self.name, "jid": self.job_id}
        if self.created:
            data["t"] = round(self.created, 3)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, uid: str, text: str) -> LedgerEntry | None:
        try:
            data = json.loads(text)
            return cls(uid, str(data["ns"]), str(data["name"]), str(data.get("jid", "")),
                       float(data.get("t", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None

    def stub_pod(self) -> Obj:
        """A minimal v1.Pod for a remote delete when the real object is gone."""
        annotations = {"JobID": self.job_id} if self.job_id else {}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                             "annotations": annotations},
                "spec": {"containers": []}, "status": {}}


class _Shard:
    def __init__(self, name: str) -> None:
        self.name = name
        self.resource_version = ""
        self.stored: dict[str, str] = {}
        self.pending: dict[str, str | None] = {}  # uid → encoded entry, or None to remove
        self.waiters: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()
        self.lazy_timer: asyncio.TimerHandle | None = None


class JobLedger:
    def __init__(self, objects: ObjectApi, namespace: str, node_name: str, *, shards: int = 4) -> None:
        self.objects = objects
        self.namespace = namespace
        self.node_name = node_name
        self._shards = [_Shard(f"vnode-jobs-{node_name}-{i}") for i in range(shards)]
        self._journal = _Shard(f"vnode-jobs-{node_name}-intents")
        self.entries: dict[str, LedgerEntry] = {}
        self.writes = 0

    def _all(self) -> list[_Shard]:
        return [*self._shards, self._journal]

    def _shard(self, uid: str) -> _Shard:
        try:
            index = int(uid[:1], 16)
        except ValueError:
            index = sum(uid.encode())
        return self._shards[index % len(self._shards)]

    async def load(self) -> dict[str, LedgerEntry]:
        """Read every shard and the journal (creating missing ones). Call once at start, before
        any record(). A shard's entry wins over the journal's (it was written later)."""
        for shard in [self._journal, *self._shards]:
            cm = await self.objects.get_configmap(self.namespace, shard.name)
            if cm is None:
                try:
                    cm = await self.objects.create_configmap(self.namespace, self._configmap(shard, {}))  # type: ignore[assignment]
                except AlreadyExists:
                    cm = await self.objects.get_configmap(self.namespace, shard.name)
            assert cm is not None
            shard.resource_version = cm.get("metadata", {}).get("resourceVersion", "")
            shard.stored = dict(cm.get("data") or {})
            for uid, text in shard.stored.items():
                entry = LedgerEntry.decode(uid, text)
                if entry is None:
                    log.warning("ledger %s: unreadable entry %s dropped", shard.name, uid,
                                extra=pod_fields("", "", uid))
                    continue
                self.entries[uid] = entry
        for uid in self._journal.stored:
            if uid in self._shard(uid).stored:  # moved to its shard before the journal write
                self._queue_lazy(self._journal, uid, None)
        return dict(self.entries)

    def _configmap(self, shard: _Shard, data: dict[str, str]) -> Obj:
        meta: Obj = {"name": shard.name, "namespace": self.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "vnode",
                                "vnode.dev/node": self.node_name}}
        if shard.resource_version:
            meta["resourceVersion"] = shard.resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    async def record(self, entry: LedgerEntry) -> None:
        """Record a create intent; returns once it is durable (in the journal)."""
        self.entries[entry.uid] = entry
        await self._queue(self._journal, entry.uid, entry.encode())

    def record_later(self, entry: LedgerEntry) -> None:
        """Store an entry in its shard without waiting (a job id learned after the create); its
        intent leaves the journal once the shard has it."""
        self.entries[entry.uid] = entry
        self._queue_lazy(self._shard(entry.uid), entry.uid, entry.encode())

    def forget(self, uid: str) -> None:
        """Drop an entry (lazily; a crash before it is written only repeats a harmless delete)."""
        known = self.entries.pop(uid, None) is not None
        shard = self._shard(uid)
        if known or uid in shard.stored or shard.pending.get(uid) is not None:
            self._queue_lazy(shard, uid, None)
        if uid in self._journal.stored or self._journal.pending.get(uid) is not None:
            self._queue_lazy(self._journal, uid, None)

    def _queue(self, shard: _Shard, uid: str, value: str | None) -> asyncio.Future[None]:
        shard.pending[uid] = value
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        shard.waiters.append(future)
        shard.wake.set()
        return future

    def _queue_lazy(self, shard: _Shard, uid: str, value: str | None) -> None:
        shard.pending[uid] = value
        if shard.lazy_timer is None:
            shard.lazy_timer = asyncio.get_running_loop().call_later(LAZY_LINGER, self._wake_lazy,
                                                                     shard)

    @staticmethod
    def _wake_lazy(shard: _Shard) -> None:
        shard.lazy_timer = None
        shard.wake.set()

    def _written(self, shard: _Shard, changes: dict[str, str | None]) -> None:
        """After a shard write: the entries it now holds leave the journal (lazily). An intent
        queued again meanwhile (a pending journal write) stays."""
        if shard is self._journal:
            return
        journal = self._journal
        for uid, value in changes.items():
            if value is not None and uid in journal.stored and uid not in journal.pending:
                self._queue_lazy(journal, uid, None)

    async def run(self) -> None:
        """The writer: one task, serving every shard (started by the app)."""
        try:
            await asyncio.gather(*(self._run_shard(s) for s in self._all()))
        finally:
            for shard in self._all():
                if shard.lazy_timer is not None:
                    shard.lazy_timer.cancel()
                    shard.lazy_timer = None

    async def _run_shard(self, shard: _Shard) -> None:
        failures = 0
        while True:
            await shard.wake.wait()
            shard.wake.clear()
            if not shard.pending:
                continue
            pending, waiters = shard.pending, shard.waiters
            shard.pending, shard.waiters = {}, []
            if shard.lazy_timer is not None:  # the lazy changes go out with this write
                shard.lazy_timer.cancel()
                shard.lazy_timer = None
            try:
                await self._write(shard, pending)
                failures = 0
                self._written(shard, pending)
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
            except KubeError as err:
                failures += 1
                log.warning("ledger %s: write failed (%s); retrying", shard.name, err)
                # Put the changes back (newer ones queued meanwhile win) and retry.
                for uid, value in pending.items():
                    shard.pending.setdefault(uid, value)
                shard.waiters = waiters + shard.waiters
                shard.wake.set()
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _write(self, shard: _Shard, pending: dict[str, str | None]) -> None:
        for _ in range(10):
            data = dict(shard.stored)
            for uid, value in pending.items():
                if value is None:
                    data.pop(uid, None)
                else:
                    data[uid] = value
            if data == shard.stored:
                return
            try:
                cm = await self.objects.update_configmap(self.namespace, self._configmap(shard, data))
            except Conflict:
                await self._reload(shard)
                continue
            except NotFound:
                shard.resource_version = ""
                cm = await self.objects.create_configmap(self.namespace, self._configmap(shard, data))
            shard.stored = data
            shard.resource_version = cm.get("metadata", {}).get("resourceVersion", "")
            self.writes += 1
            return
        raise Conflict(f"ledger {shard.name}: too many conflicting writers")

    async def _reload(self, shard: _Shard) -> None:
        cm = await self.objects.get_configmap(self.namespace, shard.name)
        if cm is None:
            shard.resource_version = ""
            shard.stored = {}
        else:
            shard.resource_version = cm.get("metadata", {}).get("resourceVersion", "")
            shard.stored = dict(cm.get("data") or {})

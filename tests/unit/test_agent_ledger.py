"""The job ledger: durable, sharded, group-committed, with create intents in a small journal."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_agent_pod_controller import FakeApiServer
from vnode.kube.errors import Transient
from vnode.node import ledger as ledger_module
from vnode.node.ledger import JobLedger, LedgerEntry


async def run_ledger(ledger: JobLedger) -> asyncio.Task[None]:
    await ledger.load()
    return asyncio.ensure_future(ledger.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_burst_of_records_is_written_in_a_few_group_commits() -> None:
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=4)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        entries = [LedgerEntry(f"{i:x}{i:07d}-uid", "ns", f"p{i}") for i in range(200)]
        await asyncio.gather(*(ledger.record(e) for e in entries))
        assert ledger.writes <= 2 * 4  # two rounds per shard at most, not 200 writes
        reread = JobLedger(api, "kube-node-lease", "vn", shards=4)  # type: ignore[arg-type]
        assert await reread.load() == {e.uid: e for e in entries}
    finally:
        await stop(task)


async def test_forgotten_intents_ride_along_with_the_next_eager_write() -> None:
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=1)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("a1", "ns", "p"))
        await ledger.record(LedgerEntry("a2", "ns", "q"))
        writes = ledger.writes
        ledger.forget("a1")  # its create failed for good
        await ledger.record(LedgerEntry("a3", "ns", "r"))  # one write carries both changes
        assert ledger.writes == writes + 1
        reread = await JobLedger(api, "kube-node-lease", "vn", shards=1).load()  # type: ignore[arg-type]
        assert set(reread) == {"a2", "a3"}
    finally:
        await stop(task)


async def test_an_entry_moves_from_the_journal_to_its_shard_once_the_job_id_is_known(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "LAZY_LINGER", 0.01)
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=1)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("a1", "ns", "p"))
        assert "a1" in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]
        ledger.record_later(LedgerEntry("a1", "ns", "p", "42"))
        for _ in range(300):
            if "a1" not in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]:
                break
            await asyncio.sleep(0.01)
        assert "a1" not in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]
        reread = await JobLedger(api, "kube-node-lease", "vn", shards=1).load()  # type: ignore[arg-type]
        assert reread["a1"].job_id == "42"
    finally:
        await stop(task)


async def test_the_journal_keeps_an_intent_until_its_shard_write_succeeded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "LAZY_LINGER", 0.01)
    api = FakeApiServer()
    real_update = api.update_configmap
    shard_fails = True

    async def update(ns: str, cm: dict[str, object]) -> dict[str, object]:
        meta = cm["metadata"]
        assert isinstance(meta, dict)
        if meta["name"] == "vnode-jobs-vn-0" and shard_fails:
            raise Transient("apiserver unavailable")
        return await real_update(ns, cm)

    api.update_configmap = update  # type: ignore[method-assign]
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=1)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("a1", "ns", "p"))
        ledger.record_later(LedgerEntry("a1", "ns", "p", "42"))
        await asyncio.sleep(0.3)  # the shard write keeps failing (and is retried)
        assert "a1" in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]
        crashed = await JobLedger(api, "kube-node-lease", "vn", shards=1).load()  # type: ignore[arg-type]
        assert "a1" in crashed  # a crash now still finds the pod
        shard_fails = False
        for _ in range(500):
            if "a1" not in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]:
                break
            await asyncio.sleep(0.01)
        assert api.configmaps[("kube-node-lease", "vnode-jobs-vn-0")]["data"]["a1"]
        assert "a1" not in api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]
    finally:
        await stop(task)


async def test_on_load_a_shard_entry_wins_over_a_leftover_intent() -> None:
    api = FakeApiServer()
    await api.create_configmap("kube-node-lease", {"metadata": {"name": "vnode-jobs-vn-intents"}, "data": {
        "a1": LedgerEntry("a1", "ns", "p", created=5.0).encode(),
        "b2": LedgerEntry("b2", "ns", "q", created=6.0).encode()}})
    await api.create_configmap("kube-node-lease", {"metadata": {"name": "vnode-jobs-vn-0"}, "data": {
        "a1": LedgerEntry("a1", "ns", "p", "42", 5.0).encode()}})
    loaded = await JobLedger(api, "kube-node-lease", "vn", shards=1).load()  # type: ignore[arg-type]
    assert loaded["a1"].job_id == "42"
    assert loaded["b2"] == LedgerEntry("b2", "ns", "q", created=6.0)  # in doubt


async def test_lazy_changes_are_written_after_the_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "LAZY_LINGER", 0.05)
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn")  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("b2", "ns", "q"))
        ledger.forget("b2")
        for _ in range(200):
            reread = await JobLedger(api, "kube-node-lease", "vn").load()  # type: ignore[arg-type]
            if not reread:
                break
            await asyncio.sleep(0.01)
        assert reread == {}
    finally:
        await stop(task)


async def test_a_concurrent_writer_causes_a_reload_not_lost_entries() -> None:
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=1)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("a1", "ns", "p"))
        # Someone else edits the ConfigMap: our cached resourceVersion is now stale.
        cm = api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]
        await api._replace(("kube-node-lease", "vnode-jobs-vn-intents"),
                           {**cm, "data": {**cm["data"], "zz": '{"ns":"x","name":"y","jid":""}'}})
        await ledger.record(LedgerEntry("b2", "ns", "q"))
        stored = api.configmaps[("kube-node-lease", "vnode-jobs-vn-intents")]["data"]
        assert set(stored) == {"a1", "b2", "zz"}
    finally:
        await stop(task)


def test_entries_round_trip_and_bad_ones_are_rejected() -> None:
    entry = LedgerEntry("u", "ns", "name with ü", "job-1")
    assert LedgerEntry.decode("u", entry.encode()) == entry
    assert LedgerEntry.decode("u", "not json") is None
    assert LedgerEntry.decode("u", '{"ns": "x"}') is None


def test_a_stub_pod_names_the_job_for_the_remote_delete() -> None:
    stub = LedgerEntry("u", "ns", "p", "77").stub_pod()
    assert stub["metadata"] == {"name": "p", "namespace": "ns", "uid": "u",
                                "annotations": {"JobID": "77"}}

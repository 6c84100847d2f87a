"""The job ledger: durable, sharded, group-committed."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_agent_pod_controller import FakeApiServer
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


async def test_forgotten_entries_ride_along_with_the_next_eager_write() -> None:
    api = FakeApiServer()
    ledger = JobLedger(api, "kube-node-lease", "vn", shards=1)  # type: ignore[arg-type]
    task = await run_ledger(ledger)
    try:
        await ledger.record(LedgerEntry("a1", "ns", "p", "42"))
        await ledger.record(LedgerEntry("a2", "ns", "q"))
        writes = ledger.writes
        ledger.forget("a1")
        ledger.record_later(LedgerEntry("a2", "ns", "q", "43"))
        await ledger.record(LedgerEntry("a3", "ns", "r"))  # one write carries all three changes
        assert ledger.writes == writes + 1
        reread = await JobLedger(api, "kube-node-lease", "vn", shards=1).load()  # type: ignore[arg-type]
        assert set(reread) == {"a2", "a3"} and reread["a2"].job_id == "43"
    finally:
        await stop(task)


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
        cm = api.configmaps[("kube-node-lease", "vnode-jobs-vn-0")]
        await api._replace(("kube-node-lease", "vnode-jobs-vn-0"),
                           {**cm, "data": {**cm["data"], "zz": '{"ns":"x","name":"y","jid":""}'}})
        await ledger.record(LedgerEntry("b2", "ns", "q"))
        stored = api.configmaps[("kube-node-lease", "vnode-jobs-vn-0")]["data"]
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

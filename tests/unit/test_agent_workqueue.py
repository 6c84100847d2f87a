"""The keyed work queue: one worker per key at a time, in order; keys in parallel up to the
worker bound; bursts coalesce; a failing handler is retried, never fatal."""

from __future__ import annotations

import asyncio

import pytest

from vnode.kube.retry import Backoff
from vnode.node.workqueue import WorkQueue


async def test_one_key_is_never_processed_by_two_workers_at_once() -> None:
    active: set[str] = set()
    overlaps = 0
    runs: list[str] = []

    async def handle(key: str) -> None:
        nonlocal overlaps
        if key in active:
            overlaps += 1
        active.add(key)
        await asyncio.sleep(0.01)
        runs.append(key)
        active.discard(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=4)
    queue.start()
    for _ in range(5):
        queue.add("a")
        queue.add("b")
        await asyncio.sleep(0.003)
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert overlaps == 0
    assert "a" in runs and "b" in runs


async def test_adding_a_key_that_is_already_waiting_does_nothing() -> None:
    gate = asyncio.Event()
    runs: list[str] = []

    async def handle(key: str) -> None:
        await gate.wait()
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.start()
    queue.add("busy")
    await asyncio.sleep(0.01)  # "busy" is being processed
    for _ in range(10):
        queue.add("x")
    gate.set()
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert runs == ["busy", "x"]


async def test_a_key_added_while_processing_runs_exactly_once_more() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def handle(key: str) -> None:
        nonlocal runs
        runs += 1
        started.set()
        if runs == 1:
            await release.wait()

    queue: WorkQueue[str] = WorkQueue(handle, workers=2)
    queue.start()
    queue.add("k")
    await started.wait()
    queue.add("k")
    queue.add("k")
    release.set()
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert runs == 2


async def test_parallelism_is_bounded_by_the_worker_count() -> None:
    running = 0
    peak = 0

    async def handle(key: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    queue: WorkQueue[int] = WorkQueue(handle, workers=3)
    queue.start()
    for i in range(20):
        queue.add(i)
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert peak == 3


async def test_a_failing_handler_is_retried_and_other_keys_go_on() -> None:
    attempts: dict[str, int] = {}

    async def handle(key: str) -> None:
        attempts[key] = attempts.get(key, 0) + 1
        if key == "bad" and attempts[key] < 3:
            raise RuntimeError("boom")

    queue: WorkQueue[str] = WorkQueue(handle, workers=1,
                                      error_backoff=Backoff(base=0.001, factor=1.0, cap=0.001, jitter=0))
    queue.start()
    queue.add("bad")
    queue.add("good")
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert attempts == {"bad": 3, "good": 1}


async def test_add_after_runs_later_and_add_now_wins_over_a_pending_timer() -> None:
    runs: list[str] = []

    async def handle(key: str) -> None:
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.start()
    queue.add_after("later", 3600)
    queue.add_after("soon", 0.01)
    queue.add("later")  # cancels the hour-long timer
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert sorted(runs) == ["later", "soon"]


async def test_forget_cancels_a_pending_retry() -> None:
    runs: list[str] = []

    async def handle(key: str) -> None:
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.start()
    queue.add_after("gone", 0.05)
    queue.forget("gone")
    await asyncio.sleep(0.1)
    await queue.stop()
    assert runs == []


def test_at_least_one_worker_is_required() -> None:
    async def handle(key: str) -> None:
        return None

    with pytest.raises(ValueError):
        WorkQueue(handle, workers=0)


async def test_urgent_keys_run_before_ordinary_keys_that_wait_longer() -> None:
    gate = asyncio.Event()
    runs: list[str] = []

    async def handle(key: str) -> None:
        await gate.wait()
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.start()
    queue.add("busy")
    await asyncio.sleep(0.01)  # the only worker is taken
    for key in ("create-1", "create-2", "create-3"):
        queue.add(key)
    queue.add("status-1", urgent=True)
    queue.add("create-2", urgent=True)  # a waiting key moves ahead, and still runs once
    gate.set()
    await asyncio.wait_for(queue.wait_idle(), 10)
    await queue.stop()
    assert runs == ["busy", "status-1", "create-2", "create-1", "create-3"]

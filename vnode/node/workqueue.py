"""A keyed work queue with bounded workers: each key is handled by one worker at a time, in the
order its work arrived, while different keys run in parallel.

Like client-go's workqueue, it is level-triggered: adding a key that is already waiting does
nothing, and adding a key while it is being processed makes it run once more afterwards. The handler
therefore reads the *latest* state for the key, never the event that queued it, so bursts of
events for one pod collapse into one sync.

Two lanes: `add(key, urgent=True)` puts the key ahead of every ordinary one. The pod controller
uses it for work that is quick and latency-bound (writing a status the plugin just reported) so
that it never waits behind a burst of slow creates; ordinary keys keep their FIFO order.

Workers are supervised: a handler that raises is logged and its key retried with per-key capped
exponential backoff; it never takes a worker (or the node) down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

from vnode.kube.retry import Backoff

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, handler: Callable[[K], Awaitable[None]], *, workers: int,
                 name: str = "queue", error_backoff: Backoff | None = None,
                 log_fields: Callable[[K], Mapping[str, str]] | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.handler = handler
        self.workers = workers
        self.name = name
        # `extra=` for the lines about a key (a pod queue passes logformat.pod_fields of the pod).
        self.log_fields = log_fields or (lambda key: {})
        # Backoff for keys whose handler raised: 0.5 s doubling to 5 min, like the kubelet's
        # pod-worker backoff cap.
        self.error_backoff = error_backoff or Backoff(base=0.5, factor=2.0, cap=300.0)
        # Keys ready to run, per lane. A key can sit in both lanes (queued, then made urgent):
        # the first pop runs it and the other entry is skipped as stale. One semaphore release
        # per entry wakes exactly one worker.
        self._urgent_lane: deque[K] = deque()
        self._normal_lane: deque[K] = deque()
        self._entries = asyncio.Semaphore(0)
        self._urgent: set[K] = set()  # waiting keys that go in the urgent lane
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    # -- adding work ------------------------------------------------------------------------

    def add(self, key: K, *, urgent: bool = False) -> None:
        """Queue `key` now (no-op if it is already waiting, except that `urgent` moves a waiting
        key ahead)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._dirty:
            if urgent and key not in self._urgent:
                self._urgent.add(key)
                if key not in self._processing:
                    self._push(key)
            return
        self._dirty.add(key)
        if urgent:
            self._urgent.add(key)
        self._idle.clear()
        if key not in self._processing:
            self._push(key)

    def _push(self, key: K) -> None:
        (self._urgent_lane if key in self._urgent else self._normal_lane).append(key)
        self._entries.release()

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds. An earlier pending timer for the key wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)
        self._idle.clear()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop the error-retry count and any pending timer for `key`."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if not self.busy:
            self._idle.set()

    # -- running -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._dirty - self._processing)

    @property
    def busy(self) -> bool:
        return bool(self._dirty or self._processing or self._timers)

    async def _next(self) -> K:
        while True:
            await self._entries.acquire()
            key = self._urgent_lane.popleft() if self._urgent_lane else self._normal_lane.popleft()
            if key not in self._dirty or key in self._processing:
                continue  # the stale second entry of a key that was made urgent
            self._dirty.discard(key)
            self._urgent.discard(key)
            self._processing.add(key)
            return key

    def _done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._push(key)
        if not self.busy:
            self._idle.set()

    async def _worker(self, index: int) -> None:
        while True:
            key = await self._next()
            try:
                await self.handler(key)
            except asyncio.CancelledError:
                self._done(key)
                raise
            except Exception:
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                delay = self.error_backoff.delay(failures)
                log.exception("%s: handling %s failed (attempt %d); retrying in %.1fs",
                              self.name, key, failures + 1, delay, extra=self.log_fields(key))
                self.add_after(key, delay)  # before _done, so the queue never looks idle
                self._done(key)
            else:
                self._done(key)

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(i), name=f"{self.name}-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait_idle(self) -> None:
        """Wait until nothing is queued, running or scheduled (for tests and shutdown)."""
        await self._idle.wait()

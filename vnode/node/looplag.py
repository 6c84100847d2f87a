"""Event-loop lag: how late the loop wakes a task that asked to sleep.

A task sleeps `interval` seconds and measures how much longer it took; the overshoot is the time
the loop was busy elsewhere (a blocking call, a long synchronous burst) when it should have run
ready callbacks. Every other timer, socket read and probe answer was late by about as much.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Twice a second: a blocked loop shows within half a second, at a cost of two wake-ups a second.
LAG_INTERVAL = 0.5


class LoopLagMonitor:
    def __init__(self, observe: Callable[[float], None], *, interval: float = LAG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.observe = observe
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.last = 0.0  # the latest lag, seconds

    async def measure_once(self) -> float:
        started = self.clock()
        await self.sleep(self.interval)
        lag = max(0.0, self.clock() - started - self.interval)
        self.last = lag
        self.observe(lag)
        return lag

    async def run(self) -> None:
        while True:
            await self.measure_once()

"""A client-side token bucket for apiserver requests (client-go's flowcontrol, in asyncio).

The kubelet defaults to 50 requests/s with bursts of 100; client-go's library default of 5/s is far
too slow for a node that starts hundreds of pods at once, so vnode uses the kubelet's numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`acquire()` waits until a token is available. Tokens refill at `qps`, up to `burst`.

    Waiters are served in arrival order (a lock around the wait), so one busy controller cannot
    starve another. `qps <= 0` disables limiting.
    """

    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    def delay_for_next(self) -> float:
        """Seconds until a token is available (0 if one is available now)."""
        if self.qps <= 0:
            return 0.0
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.qps

    def try_take(self) -> bool:
        """Take a token if one is available now."""
        if self.qps <= 0:
            return True
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.qps <= 0:
            return
        async with self._lock:
            # A token bucket refills with time, not with an event: sleeping until the next token is the design.
            while not self.try_take():  # noqa: ASYNC110
                await asyncio.sleep(self.delay_for_next())

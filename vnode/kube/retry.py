"""The one retry policy for apiserver calls, and the capped exponential backoff it uses.

Pure: the policy decides *whether* and *how long* to wait; the client does the waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vnode.kube.errors import KubeError, Transient


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: base * factor**attempt, at most `cap`.

    Jitter spreads the retries of many pods that failed together (e.g. an apiserver restart) so
    they do not come back in one thundering herd.
    """

    base: float = 0.2
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based)."""
        raw = min(self.cap, self.base * (self.factor ** max(0, attempt)))
        if self.jitter:
            r = (rng or random).random()
            raw = raw * (1 - self.jitter + 2 * self.jitter * r)
        return min(self.cap, raw)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient apiserver failures a bounded number of times.

    The defaults ride out an apiserver restart of ~10 s (0.2+0.4+0.8+1.6+3.2+6.4 s) before the
    caller sees a Transient error and applies its own, longer-lived backoff.
    """

    attempts: int = 7
    backoff: Backoff = Backoff(base=0.2, factor=2.0, cap=10.0)
    # Retry-After can be large (apiserver sends 1 s for 429, more under APF); beyond this cap the
    # caller's own requeue is the better place to wait.
    max_retry_after: float = 30.0

    def next_delay(self, error: KubeError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise `error`.

        `attempt` counts the failures so far, starting at 0 for the first.
        """
        if not isinstance(error, Transient):
            return None
        if attempt + 1 >= self.attempts:
            return None
        if error.retry_after is not None:
            return min(self.max_retry_after, max(0.0, error.retry_after))
        return self.backoff.delay(attempt)


def parse_retry_after(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds (the apiserver never sends HTTP dates)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None

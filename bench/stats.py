"""Pure arithmetic for the benchmarks: percentiles, /proc parsing, latencies, series, ratios."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's
    default), so p50 of an even count is the mean of the middle two. NaN for no values."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_rfc3339(text: str) -> float:
    """Kubernetes timestamps ("2026-11-25T20:51:55Z", second resolution) → unix seconds."""
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class CpuSample:
    utime_ticks: int
    stime_ticks: int

    def seconds(self, ticks_per_second: int) -> float:
        return (self.utime_ticks + self.stime_ticks) / ticks_per_second


def parse_proc_stat(text: str) -> CpuSample:
    """/proc/<pid>/stat: fields 14 and 15 (utime, stime), counted after the `(comm)` field, whose
    name may contain spaces and parentheses."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field N is rest[N - 3]
    return CpuSample(int(rest[14 - 3]), int(rest[15 - 3]))


def parse_proc_status_kib(text: str, key: str) -> int:
    """A `Key:   1234 kB` line of /proc/<pid>/status, in KiB (VmRSS, VmHWM)."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc status")


def latencies(start: dict[str, float], end: dict[str, float]) -> list[float]:
    """end - start for every key present in both (pods that never ran are counted elsewhere)."""
    return [end[k] - start[k] for k in start if k in end]


def running_over_time(t0: float, times: Iterable[float], step: float = 0.5) -> list[tuple[float, int]]:
    """Cumulative count of events at or before each step after t0 (for pods-Running plots)."""
    ordered = sorted(t - t0 for t in times)
    if not ordered:
        return [(0.0, 0)]
    out: list[tuple[float, int]] = []
    i = 0
    steps = max(1, math.ceil(ordered[-1] / step))
    for k in range(steps + 1):
        edge = k * step
        while i < len(ordered) and ordered[i] <= edge + 1e-9:
            i += 1
        out.append((edge, i))
    return out


def calls_per_cycle(call_times: Sequence[float], window_start: float, window_end: float,
                    period: float) -> float:
    """Status calls per status period in a steady-state window."""
    if window_end <= window_start or period <= 0:
        raise ValueError("empty window or period")
    n = sum(1 for t in call_times if window_start <= t < window_end)
    return n * period / (window_end - window_start)


def ratio(reference: float | None, ours: float | None) -> float | None:
    """How many times `ours` beats `reference` (reference / ours); None if either is missing."""
    if reference is None or ours is None or ours <= 0 or math.isnan(reference) or math.isnan(ours):
        return None
    return reference / ours

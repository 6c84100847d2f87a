"""The arithmetic behind BENCHMARKS.md, and the stub plugin's Running rule."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    calls_per_cycle,
    latencies,
    parse_proc_stat,
    parse_proc_status_kib,
    parse_rfc3339,
    percentile,
    ratio,
    running_over_time,
)
from bench.stubplugin import StubPod, container_state


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)


def test_percentile_of_nothing_is_nan_and_out_of_range_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)


def test_kubernetes_timestamps_are_utc() -> None:
    assert parse_rfc3339("1970-01-01T00:01:00Z") == 60.0


def test_proc_stat_fields_are_found_after_a_command_name_with_spaces_and_parens() -> None:
    fields = " ".join(str(i) for i in range(3, 53)).replace("3", "S", 1)
    text = f"1234 (python3 (bench) x) {fields}"
    sample = parse_proc_stat(text)
    assert (sample.utime_ticks, sample.stime_ticks) == (14, 15)
    assert sample.seconds(100) == pytest.approx(0.29)


def test_proc_status_values_are_read_in_kib() -> None:
    text = "Name:\tpython3\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert parse_proc_status_kib(text, "VmRSS") == 102400
    assert parse_proc_status_kib(text, "VmHWM") == 204800
    with pytest.raises(KeyError):
        parse_proc_status_kib(text, "VmSwap")


def test_latencies_skip_pods_that_never_reached_the_end_state() -> None:
    assert latencies({"a": 1.0, "b": 2.0}, {"a": 3.5}) == [2.5]


def test_running_over_time_is_cumulative_per_step() -> None:
    series = running_over_time(100.0, [100.2, 100.4, 101.1], step=0.5)
    assert series == [(0.0, 0), (0.5, 2), (1.0, 2), (1.5, 3)]
    assert running_over_time(0.0, []) == [(0.0, 0)]


def test_calls_per_cycle_scales_the_window_to_one_period() -> None:
    calls = [0.0, 5.0, 10.0, 15.0, 16.0]
    assert calls_per_cycle(calls, 0.0, 15.0, 5.0) == 1.0
    with pytest.raises(ValueError):
        calls_per_cycle(calls, 5.0, 5.0, 5.0)


def test_ratio_is_reference_over_ours_and_missing_when_either_is() -> None:
    assert ratio(10.0, 2.0) == 5.0
    assert ratio(None, 2.0) is None
    assert ratio(10.0, None) is None
    assert ratio(10.0, math.nan) is None


def test_stub_reports_waiting_until_the_delay_then_running_from_then_on() -> None:
    pod = StubPod(namespace="ns", name="p", jid="stub-1", containers=("main",), init_containers=(),
                  created=100.0)
    waiting = container_state(pod, 100.5, running_after=1.0)
    assert waiting.waiting is not None and waiting.running is None
    running = container_state(pod, 101.0, running_after=1.0)
    assert running.running is not None
    later = container_state(pod, 200.0, running_after=1.0)
    assert later.running is not None and later.running.started_at == running.running.started_at

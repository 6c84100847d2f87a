"""The bench's kubectl logs -f latency: history lines (already written when kubectl attached) are not follow latency."""

from __future__ import annotations

from bench.slurm_e2e import follow_split


def test_lines_printed_before_kubectl_received_its_first_line_are_history_not_latency() -> None:
    # printed every 0.2 s from 10.0; kubectl started at 10.5 and got the first four at once at 10.7
    lines = [(10.0, 10.7), (10.2, 10.7), (10.4, 10.7), (10.6, 10.7), (10.8, 10.85), (11.0, 11.3)]
    split = follow_split(lines, launched=10.5)
    assert split["follow_history_lines"] == 4
    assert [round(x, 2) for x in split["follow_latencies"]] == [0.05, 0.3]
    assert round(split["follow_attach_s"], 2) == 0.2
    assert len(split["follow_latencies_all"]) == 6


def test_no_lines_means_no_latencies_rather_than_an_error() -> None:
    assert follow_split([], launched=1.0)["follow_latencies"] == []

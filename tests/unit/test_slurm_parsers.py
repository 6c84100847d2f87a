"""Parsers of SLURM output (recorded from the testbed's SLURM 22.05) and the state table."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vnode.plugins.slurm.parsers import (
    ParseError,
    gres_gpus,
    parse_sacct,
    parse_sbatch,
    parse_sinfo,
    parse_slurm_time,
    parse_squeue,
    usable,
)
from vnode.plugins.slurm.states import (
    COMPLETED,
    DEADLINE_EXCEEDED,
    ERROR,
    OOM_KILLED,
    STATES,
    Phase,
    job_state,
)

RECORDED = Path(__file__).parent / "golden" / "slurm" / "recorded"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


# --- sbatch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("out", "job"), [
    ("Submitted batch job 19\n", "19"),
    ("18\n", "18"),
    ("18;cluster2\n", "18"),
    ("sbatch: warning: something odd\nSubmitted batch job 7\n", "7"),
])
def test_sbatch_job_id_in_every_output_format(out: str, job: str) -> None:
    assert parse_sbatch(out) == job


def test_sbatch_output_without_a_job_id_is_an_error_not_a_crash() -> None:
    with pytest.raises(ParseError, match="no job id"):
        parse_sbatch("sbatch: error: something\n")


# --- squeue / sacct ---------------------------------------------------------------------------------


def test_recorded_squeue_rows() -> None:
    jobs = parse_squeue(recorded("squeue-22.05.txt"))
    assert set(jobs) == {"16", "17", "18", "19", "20", "284", "285", "77"}
    assert jobs["19"].state.name == "FAILED" and jobs["19"].exit_code == 3 and jobs["19"].reason == "NonZeroExitCode"
    assert jobs["16"].state.name == "CANCELLED" and jobs["16"].exit_code == 143 and jobs["16"].signal == 15
    assert jobs["18"].state.phase is Phase.RUNNING and jobs["18"].end is None and jobs["18"].exit_code == 0
    assert jobs["20"].end is not None and jobs["20"].node == "localhost"
    assert jobs["18"].start is not None and jobs["18"].start.tzinfo is UTC
    assert jobs["284"].state.name == "PENDING" and jobs["284"].reason == "Resources" and jobs["284"].start is None
    assert jobs["77"].state.reason == DEADLINE_EXCEEDED and jobs["77"].reason == "TimeLimit"


def test_recorded_sacct_rows() -> None:
    jobs = parse_sacct(recorded("sacct-22.05.txt"))
    assert jobs["16"].state.name == "CANCELLED"  # "CANCELLED by 0"
    assert jobs["19"].exit_code == 3 and jobs["19"].state.reason == ERROR
    assert jobs["18"].end is None  # "Unknown"
    assert jobs["36"].state.name == "TIMEOUT" and jobs["36"].exit_code == 0
    assert jobs["284"].start is None and jobs["284"].node == "None assigned"  # cancelled while pending


def test_sacct_step_lines_are_ignored() -> None:
    jobs = parse_sacct("18|RUNNING|0:0|2026-11-25T20:41:45|Unknown|None|n1\n18.batch|RUNNING|0:0|x|y|None|n1\n")
    assert list(jobs) == ["18"]


def test_sacct_signal_exit_becomes_128_plus_signal() -> None:
    (info,) = parse_sacct("5|CANCELLED by 0|0:9|2026-01-01T00:00:00|2026-01-01T00:00:01|None|n\n").values()
    assert info.exit_code == 137 and info.signal == 9


def test_squeue_noise_lines_are_skipped() -> None:
    assert parse_squeue("slurm_load_jobs error: Invalid job id specified\n\n") == {}


def test_local_times_become_utc() -> None:
    moment = parse_slurm_time("2026-11-25T20:41:45")
    assert moment is not None and moment.tzinfo is UTC
    assert moment == datetime(2026, 11, 25, 20, 41, 45).astimezone().astimezone(UTC)
    assert parse_slurm_time("NONE") is None and parse_slurm_time("Unknown") is None and parse_slurm_time("N/A") is None


# --- sinfo ------------------------------------------------------------------------------------------


def test_recorded_sinfo() -> None:
    (node,) = parse_sinfo(recorded("sinfo-22.05.txt"))
    assert (node.name, node.cpus, node.memory_mib, node.gpus, node.state) == ("localhost", 8, 16384, 0, "mixed")
    assert usable(node)


def test_node_in_two_partitions_counts_once_and_drained_nodes_are_not_usable() -> None:
    nodes = parse_sinfo("n1|8|1000|gpu:a100:4(S:0-1)|idle\nn1|8|1000|gpu:a100:4(S:0-1)|idle\nn2|4|500|(null)|drained*\n")
    assert [n.name for n in nodes] == ["n1", "n2"]
    assert nodes[0].gpus == 4
    assert [usable(n) for n in nodes] == [True, False]


@pytest.mark.parametrize(("gres", "gpus"), [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1),gpu:v100:2", 6), ("nic:1,gpu:1", 1), ("", 0)])
def test_gres_gpu_counts(gres: str, gpus: int) -> None:
    assert gres_gpus(gres) == gpus


def test_bad_sinfo_numbers_are_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_sinfo("n1|many|1000|(null)|idle\n")


# --- the state table --------------------------------------------------------------------------------

ALL_STATES = {
    "PENDING": Phase.PENDING, "CONFIGURING": Phase.PENDING, "RUNNING": Phase.RUNNING, "COMPLETING": Phase.RUNNING,
    "COMPLETED": Phase.FINISHED, "FAILED": Phase.FINISHED, "CANCELLED": Phase.FINISHED, "TIMEOUT": Phase.FINISHED,
    "OUT_OF_MEMORY": Phase.FINISHED, "NODE_FAIL": Phase.FINISHED, "PREEMPTED": Phase.FINISHED, "SUSPENDED": Phase.RUNNING,
    "REQUEUED": Phase.PENDING, "BOOT_FAIL": Phase.FINISHED, "DEADLINE": Phase.FINISHED, "RESV_DEL_HOLD": Phase.PENDING,
    "REQUEUE_FED": Phase.PENDING, "REQUEUE_HOLD": Phase.PENDING, "RESIZING": Phase.RUNNING, "REVOKED": Phase.FINISHED,
    "SIGNALING": Phase.RUNNING, "SPECIAL_EXIT": Phase.FINISHED, "STAGE_OUT": Phase.RUNNING, "STOPPED": Phase.RUNNING,
}


@pytest.mark.parametrize(("name", "phase"), sorted(ALL_STATES.items()))
def test_every_slurm_state_is_mapped_explicitly(name: str, phase: Phase) -> None:
    assert name in STATES
    assert job_state(name).phase is phase


@pytest.mark.parametrize(("name", "reason"), [("COMPLETED", COMPLETED), ("FAILED", ERROR), ("CANCELLED", ERROR),
                                              ("TIMEOUT", DEADLINE_EXCEEDED), ("DEADLINE", DEADLINE_EXCEEDED),
                                              ("OUT_OF_MEMORY", OOM_KILLED), ("NODE_FAIL", ERROR), ("BOOT_FAIL", ERROR)])
def test_finished_states_carry_container_reasons(name: str, reason: str) -> None:
    assert job_state(name).reason == reason


@pytest.mark.parametrize(("code", "name"), [("PD", "PENDING"), ("CF", "CONFIGURING"), ("CG", "COMPLETING"), ("CD", "COMPLETED"),
                                            ("F", "FAILED"), ("NF", "NODE_FAIL"), ("BF", "BOOT_FAIL"), ("TO", "TIMEOUT"),
                                            ("OOM", "OUT_OF_MEMORY"), ("RQ", "REQUEUED"), ("SE", "SPECIAL_EXIT")])
def test_compact_codes_are_anchored_not_substrings(code: str, name: str) -> None:
    """The Go plugin's unanchored regex read CF (configuring) as F (failed); here every code is exact."""
    assert job_state(code).name == name


def test_cancelled_by_uid_and_plus_suffix_are_understood() -> None:
    assert job_state("CANCELLED by 1000").name == "CANCELLED"
    assert job_state("CANCELLED+").name == "CANCELLED"


def test_unknown_state_warns_and_is_treated_as_pending(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        state = job_state("WARPING")
    assert state.phase is Phase.PENDING
    assert "WARPING" in caplog.text

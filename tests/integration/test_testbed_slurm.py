"""Smoke tests proving the testbed's SLURM cluster runs real jobs and accounts for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Testbed

pytestmark = pytest.mark.integration

RENDEZVOUS_SECONDS = 120  # how long a job waits for its partner before giving up (bounds a hang only)


def test_sbatch_wrap_runs_and_sacct_reports_completed_and_failed_exit_codes(testbed: Testbed, tmp_path: Path) -> None:
    ok = testbed.submit_job(tmp_path, "--mem=64M", "--wrap", "echo ran-on-$(hostname) > ok.txt; exit 0")
    failed = testbed.submit_job(tmp_path, "--mem=64M", "--wrap", "exit 3")
    states = testbed.wait_jobs_finished([ok, failed])
    assert states[ok] == ("COMPLETED", "0:0")
    assert states[failed] == ("FAILED", "3:0")
    assert (tmp_path / "ok.txt").read_text().startswith("ran-on-")


def test_two_jobs_run_at_the_same_time(testbed: Testbed, tmp_path: Path) -> None:
    # Each job announces itself and then waits for the other: both can only COMPLETE if SLURM ran them
    # concurrently (one at a time, the first would give up and exit 1).
    def rendezvous(me: str, other: str) -> str:
        return (
            f"touch {me}; i=0; while [ ! -e {other} ]; do i=$((i+1)); "
            f"[ $i -gt {RENDEZVOUS_SECONDS * 10} ] && exit 1; sleep 0.1; done; exit 0"
        )

    a = testbed.submit_job(tmp_path, "--mem=128M", "-c", "1", "--wrap", rendezvous("a.here", "b.here"))
    b = testbed.submit_job(tmp_path, "--mem=128M", "-c", "1", "--wrap", rendezvous("b.here", "a.here"))
    states = testbed.wait_jobs_finished([a, b])
    assert states == {a: ("COMPLETED", "0:0"), b: ("COMPLETED", "0:0")}


def test_scancel_ends_a_running_job_as_cancelled(testbed: Testbed, tmp_path: Path) -> None:
    job = testbed.submit_job(tmp_path, "--mem=64M", "--wrap", "touch started; sleep 600")
    testbed.wait_until(lambda: (tmp_path / "started").exists(), "the job to start")
    testbed.run([testbed.scancel, job])
    states = testbed.wait_jobs_finished([job])
    assert states[job][0].startswith("CANCELLED")


def test_node_offers_room_for_several_jobs(testbed: Testbed) -> None:
    out = testbed.run([testbed.sinfo, "-h", "-N", "-n", testbed.slurm_node, "-o", "%c %m %t"]).stdout.split()
    cpus, memory_mb, state = int(out[0]), int(out[1]), out[2]
    assert cpus >= 2 and memory_mb >= 4096
    assert state in ("idle", "mix", "alloc")

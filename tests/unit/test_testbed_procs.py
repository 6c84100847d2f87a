"""How the testbed owns its daemons (hack/testbedlib/procs.py): by pid + start time, group-wide stop."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import pytest
from testbedlib import procs


@pytest.fixture(autouse=True)
def _cleanup_cgroup(tmp_path: Path):
    yield
    procs.remove_cgroup(f"test-{tmp_path}")


def _spawn_sleeper(tmp_path: Path, script: str = "sleep 300") -> procs.ProcRecord:
    return procs.spawn(
        "sleeper",
        ["/bin/sh", "-c", script],
        tmp_path / "sleeper.log",
        {"PATH": "/usr/bin:/bin"},
        owner=f"test-{tmp_path}",
        fingerprint="fp",
        cwd=tmp_path,  # scripts may write files (`touch ready`): keep them out of the checkout
    )


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)  # spawn() leaves reaping to init; in a test we are the parent
    except ChildProcessError:
        pass


def test_spawned_daemon_runs_in_its_own_session_and_is_recognised_by_its_record(tmp_path: Path) -> None:
    rec = _spawn_sleeper(tmp_path)
    try:
        assert procs.is_alive(rec)
        assert os.getpgid(rec.pid) == rec.pid and os.getsid(rec.pid) == rec.pid
        saved = tmp_path / "sleeper.json"
        rec.save(saved)
        assert procs.ProcRecord.load(saved) == rec
        assert "testbed starts sleeper" in (tmp_path / "sleeper.log").read_text()
    finally:
        procs.stop(rec, grace=5)
        _reap(rec.pid)


def test_a_recycled_pid_is_not_mistaken_for_our_daemon(tmp_path: Path) -> None:
    rec = _spawn_sleeper(tmp_path)
    try:
        impostor = dataclasses.replace(rec, start_ticks=rec.start_ticks - 1)
        assert not procs.is_alive(impostor)
        assert procs.stop(impostor) is False  # and stop() leaves the real process alone
        assert procs.is_alive(rec)
    finally:
        procs.stop(rec, grace=5)
        _reap(rec.pid)


def test_stop_ends_the_whole_process_group_including_children(tmp_path: Path) -> None:
    rec = _spawn_sleeper(tmp_path, "sleep 300 & sleep 300 & wait")
    try:
        deadline = time.monotonic() + 10
        while len(procs.owned_pids(f"test-{tmp_path}")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        family = procs.owned_pids(f"test-{tmp_path}")
        assert len(family) == 3  # sh and its two sleeps all carry the owner marker
    finally:
        assert procs.stop(rec, grace=5)
        _reap(rec.pid)
    assert procs.owned_pids(f"test-{tmp_path}") == []


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    rec = _spawn_sleeper(tmp_path, "trap '' TERM; touch ready; while :; do sleep 0.1; done")
    try:
        assert procs.stop(rec, grace=0.5)
        assert not procs.is_alive(rec)
    finally:
        _reap(rec.pid)


def test_owned_pids_finds_nothing_of_other_owners(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], env={"PATH": "/usr/bin:/bin", procs.OWNER_ENV: "someone-else"})
    try:
        assert other.pid not in procs.owned_pids(f"test-{tmp_path}")
        assert other.pid in procs.owned_pids("someone-else")
    finally:
        other.kill()
        other.wait()


def test_a_descendant_that_leaves_the_session_and_wipes_its_environment_is_still_owned(tmp_path: Path) -> None:
    # What slurmstepd does to slurmd: daemonise into its own session and overwrite its environment.
    if procs.cgroup_dir(f"test-{tmp_path}") is None:
        pytest.skip("no writable cgroup v2 hierarchy on this machine; ownership falls back to the env marker")
    rec = _spawn_sleeper(tmp_path, "setsid env -i sleep 301 & exec sleep 300")
    escaped: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not escaped:
            escaped = [p for p in procs.owned_pids(f"test-{tmp_path}") if procs.cmdline(p) == "sleep 301"]
            time.sleep(0.05)
        assert escaped, "the escaped process is not found through the cgroup"
        assert os.getsid(escaped[0]) != rec.pid
    finally:
        procs.stop(rec, grace=5)
        _reap(rec.pid)
        for pid in procs.owned_pids(f"test-{tmp_path}"):
            procs.stop(procs.ProcRecord("x", pid, procs.start_ticks(pid) or -1, [], "", ""), grace=5)
    assert procs.owned_pids(f"test-{tmp_path}") == []

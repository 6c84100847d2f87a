"""hack/demo's own machinery, without a testbed: how it recognises and stops the processes it
started, what it remembers for `hack/demo stop`, how it reports a pod that ended, and how it
recognises a machine where no testbed ever ran."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def load_demo() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("hack_demo", str(REPO / "hack" / "demo"))
    spec = importlib.util.spec_from_loader("hack_demo", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hack_demo"] = module  # dataclasses look their module up here
    loader.exec_module(module)
    return module


demo = load_demo()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.proc_start_time(pid) is None:
            return True
        time.sleep(0.05)
    return False


def test_a_process_is_identified_by_pid_and_start_time_and_a_reaped_one_is_gone(tmp_path: Path) -> None:
    proc = demo.start_owned("sleeper", ["sleep", "30"], dict(os.environ), tmp_path / "s.log", tmp_path)
    assert proc.alive()
    impostor = demo.OwnedProcess(proc.name, proc.pid, proc.start_time + 1, proc.argv, proc.log)
    assert not impostor.alive()  # same pid, other start time: a recycled pid is not ours
    assert proc.stop() == "stopped"
    assert not proc.alive() and demo.proc_start_time(proc.pid) is None


def test_a_process_that_ignores_sigterm_is_killed_with_what_it_left_in_its_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "PROCESS_STOP_TIMEOUT", 1.0)
    # The shell ignores SIGTERM and leaves a child behind in the same session, as an srun would be.
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; while :; do sleep 0.1; done"
    proc = demo.start_owned("stubborn", ["bash", "-c", script], dict(os.environ), tmp_path / "b.log", tmp_path)
    child_pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() or not child_pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    assert child in demo.session_members(proc.pid)

    assert "killed" in proc.stop()
    assert not proc.alive()
    assert wait_gone(child), "the session's leftover child survived"


def test_the_state_file_round_trips_what_demo_stop_needs(tmp_path: Path) -> None:
    proc = demo.OwnedProcess("vnode agent", 4242, 99, ["python", "-m", "vnode"], str(tmp_path / "agent.log"))
    state = demo.State(str(tmp_path), "node-a", "ns-a", pod_file="/x/demo.yaml", pod="hello", container="c",
                       job_id="17", created_namespace=True, testbed_started=False, procs=[proc])
    state.save()
    loaded = demo.State.load(tmp_path)
    assert loaded == state
    assert loaded.proc("vnode agent") == proc and loaded.proc("SLURM plugin") is None
    assert demo.State.load(tmp_path / "nothing-here") is None


def test_a_second_run_refuses_while_the_first_ones_processes_live(tmp_path: Path) -> None:
    live = subprocess.Popen(["sleep", "30"])
    try:
        start = demo.proc_start_time(live.pid)
        state = demo.State(str(tmp_path), "n", "ns", procs=[demo.OwnedProcess("vnode agent", live.pid, start, [], "")])
        state.save()
        args = demo.main.__globals__["argparse"].Namespace(
            state_dir=str(tmp_path), nodename="n", namespace="ns", pod=str(demo.DEFAULT_POD), keep=False)
        with pytest.raises(SystemExit, match=r"a demo is still running .*vnode agent pid \d+.*hack/demo stop"):
            demo.Demo(args).prepare_state_dir()
    finally:
        live.kill()
        live.wait()


def test_preparing_the_state_dir_removes_only_what_the_demo_wrote(tmp_path: Path) -> None:
    for name in ("agent.log", "vnode.yaml"):
        (tmp_path / name).write_text("old")
    (tmp_path / "demo.json").write_text("{half-written")  # a crash mid-write must not wedge the next run
    (tmp_path / "jobs" / "ns-uid").mkdir(parents=True)
    (tmp_path / "mine.txt").write_text("keep me")
    args = demo.main.__globals__["argparse"].Namespace(
        state_dir=str(tmp_path), nodename="n", namespace="ns", pod=str(demo.DEFAULT_POD), keep=False)
    demo.Demo(args).prepare_state_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "mine.txt"]
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_failed_pod_is_summarised_with_its_containers_end() -> None:
    pod = {"status": {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodFailed"}],
        "containerStatuses": [{"name": "hello", "state": {"terminated": {"reason": "Error", "exitCode": 3}}}],
    }}
    summary = demo.pod_summary(pod)
    assert "phase Failed" in summary
    assert "Ready=False PodFailed" in summary
    assert "container hello terminated Error" in summary
    assert demo.pod_summary({}) == "(never seen)"


def test_a_machine_where_no_testbed_ever_ran_counts_as_no_testbed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A state dir without a PKI: `hack/testbed status` says every component is stopped (older
    # versions failed; the demo then reads the missing CA the same way).
    monkeypatch.setenv("VNODE_TESTBED_STATE", str(tmp_path / "fresh"))
    components = demo.testbed_components(demo.testbed_info())
    assert all(state == "stopped" for state in components.values()), components


def test_the_wait_ends_at_once_when_a_watched_process_dies(tmp_path: Path) -> None:
    script = "while [ ! -e go ]; do sleep 0.05; done; echo boom; exit 7"
    proc = demo.start_owned("plugin", ["bash", "-c", script], dict(os.environ), tmp_path / "p.log", tmp_path)
    (tmp_path / "go").touch()
    with pytest.raises(demo.DemoFailed, match=r"the plugin \(pid \d+\) died: exit status 7") as failure:
        demo.wait_for(lambda: None, 60.0, (proc,))
    assert failure.value.logs == (tmp_path / "p.log",)
    assert "boom" in demo.tail(tmp_path / "p.log")


def test_sigterm_is_turned_into_the_interrupt_that_triggers_cleanup() -> None:
    with pytest.raises(KeyboardInterrupt):
        demo._interrupt(signal.SIGTERM, None)

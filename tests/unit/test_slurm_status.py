"""PodStatus from job state + container files: every combination the job can be in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from vnode.plugins.slurm.parsers import JobInfo
from vnode.plugins.slurm.states import job_state
from vnode.plugins.slurm.status import (
    ContainerFiles,
    SpecContainer,
    creating_status,
    parse_time,
    pod_status,
    read_files,
    unknown_status,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
INIT = SpecContainer("setup", "busybox", True)
MAIN = SpecContainer("main", "python:3.11", False)
SIDE = SpecContainer("side", "busybox", False)


def info(state: str, exit_code: int | None = 0, reason: str = "None") -> JobInfo:
    return JobInfo("42", job_state(state), reason, exit_code, 0, T0, T1 if state not in ("RUNNING", "PENDING") else None, "n1")


def status(files: dict[str, ContainerFiles], job: JobInfo | None, containers: list[SpecContainer] | None = None, error: str = "") -> dict[str, dict]:
    ps = pod_status("p", "ns", "uid-1", containers or [INIT, MAIN, SIDE], "42", job, files, error)
    wire = ps.to_wire()
    assert wire["JID"] == "42" and wire["UID"] == "uid-1" and wire["name"] == "p"
    return {c["name"]: c for c in wire["containers"] + (wire["initContainers"] or [])}


def test_pending_job_keeps_every_container_waiting_with_the_slurm_reason() -> None:
    s = status({}, info("PENDING", reason="Resources"))
    for name in ("setup", "main", "side"):
        assert s[name]["state"]["waiting"]["reason"] == "ContainerCreating"
        assert "Resources" in s[name]["state"]["waiting"]["message"]


def test_running_init_container_and_waiting_app_containers() -> None:
    s = status({"setup": ContainerFiles(started=T0)}, info("RUNNING"))
    assert s["setup"]["state"]["running"]["startedAt"] == "2026-01-01T12:00:00Z"
    assert s["main"]["state"]["waiting"]["reason"] == "PodInitializing"


def test_running_app_containers_are_ready_after_init_completed() -> None:
    files = {"setup": ContainerFiles(T0, T0, 0), "main": ContainerFiles(started=T1), "side": ContainerFiles(started=T1)}
    s = status(files, info("RUNNING"))
    assert s["setup"]["state"]["terminated"]["reason"] == "Completed"
    assert s["main"]["ready"] is True and "running" in s["main"]["state"]


def test_failed_container_reports_its_own_exit_code_and_error() -> None:
    files = {"setup": ContainerFiles(T0, T0, 0), "main": ContainerFiles(T0, T1, 3), "side": ContainerFiles(T0, T1, 0)}
    s = status(files, info("FAILED", exit_code=3))
    assert s["main"]["state"]["terminated"]["exitCode"] == 3 and s["main"]["state"]["terminated"]["reason"] == "Error"
    assert s["side"]["state"]["terminated"]["reason"] == "Completed"
    assert s["main"]["state"]["terminated"]["finishedAt"] == "2026-01-01T12:00:05Z"


def test_timeout_marks_killed_containers_deadline_exceeded() -> None:
    files = {"setup": ContainerFiles(T0, T0, 0), "main": ContainerFiles(T0, T1, 143), "side": ContainerFiles(T0, T1, 0)}
    s = status(files, info("TIMEOUT", exit_code=0))
    assert s["main"]["state"]["terminated"]["reason"] == "DeadlineExceeded"
    assert s["side"]["state"]["terminated"]["reason"] == "Completed"


def test_out_of_memory_marks_containers_oomkilled() -> None:
    files = {"main": ContainerFiles(T0, T1, 137)}
    s = status(files, info("OUT_OF_MEMORY", exit_code=0), [MAIN])
    assert s["main"]["state"]["terminated"]["reason"] == "OOMKilled"


def test_job_killed_before_the_status_was_written_uses_the_job_state() -> None:
    s = status({"main": ContainerFiles(started=T0)}, info("TIMEOUT", exit_code=0), [MAIN])
    term = s["main"]["state"]["terminated"]
    assert term["reason"] == "DeadlineExceeded" and term["exitCode"] == 137
    assert "ended before its exit code was recorded" in term["message"]


def test_failed_init_container_terminates_app_containers_that_never_started() -> None:
    files = {"setup": ContainerFiles(T0, T1, 7)}
    s = status(files, info("FAILED", exit_code=7))
    assert s["setup"]["state"]["terminated"]["exitCode"] == 7
    assert s["main"]["state"]["terminated"]["exitCode"] == 7
    assert "never started" in s["main"]["state"]["terminated"]["message"]


def test_cancelled_pending_job_terminates_containers() -> None:
    s = status({}, info("CANCELLED", exit_code=0), [MAIN])
    assert s["main"]["state"]["terminated"]["reason"] == "Error"
    assert "cancelled" in s["main"]["state"]["terminated"]["message"]


def test_setup_error_is_the_message() -> None:
    s = status({}, info("FAILED", exit_code=1), [MAIN], error="hostPath volume h: /x is not a directory on this node")
    assert "/x is not a directory" in s["main"]["state"]["terminated"]["message"]


def test_job_unknown_to_slurm_is_judged_by_files() -> None:
    s = status({"main": ContainerFiles(T0, T1, 0)}, None, [MAIN])
    assert s["main"]["state"]["terminated"]["reason"] == "Completed"
    s = status({}, None, [MAIN])
    assert "SLURM no longer knows job 42" in s["main"]["state"]["terminated"]["message"]


def test_completing_job_is_still_running() -> None:
    s = status({"main": ContainerFiles(started=T0)}, info("COMPLETING"), [MAIN])
    assert "running" in s["main"]["state"]


def test_unknown_pod_is_reported_like_the_kubelet_reports_lost_containers() -> None:
    wire = unknown_status("p", "ns", "u", [INIT, MAIN]).to_wire()
    assert wire["containers"][0]["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert wire["initContainers"][0]["state"]["terminated"]["exitCode"] == 137


def test_pod_being_submitted_is_waiting() -> None:
    wire = creating_status("p", "ns", "u", [MAIN]).to_wire()
    assert wire["containers"][0]["state"]["waiting"]["reason"] == "ContainerCreating"


def test_files_are_read_from_the_go_layout(tmp_path: Path) -> None:
    (tmp_path / "init-setup.status").write_text("0\n")
    (tmp_path / "init-setup.started").write_text("2026-01-01T12:00:00.123456789Z\n")
    (tmp_path / "run-main.status").write_text("3")  # the Go plugin writes no newline sometimes
    (tmp_path / "job.error").write_text("boom\n")
    files, error = read_files(tmp_path, [INIT, MAIN, SIDE])
    assert files["setup"].exit_code == 0 and files["setup"].started == datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert files["main"].exit_code == 3 and files["main"].started is None
    assert files["side"] == ContainerFiles(legacy=True)  # no pod.json: written by the Go plugin
    assert error == "boom"


def test_time_parser_accepts_nanoseconds_and_rejects_garbage() -> None:
    assert parse_time("2026-01-01T12:00:00.000000001Z") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_time("yesterday") is None


def test_running_job_of_the_go_plugin_reports_its_containers_running_since_the_job_started() -> None:
    s = status({"main": ContainerFiles(legacy=True)}, info("RUNNING"), [MAIN])
    assert s["main"]["state"]["running"]["startedAt"] == "2026-01-01T12:00:00Z"


def test_go_layout_is_recognised_by_the_missing_pod_json(tmp_path: Path) -> None:
    files, _ = read_files(tmp_path, [MAIN])
    assert files["main"].legacy
    (tmp_path / "pod.json").write_text("{}")
    files, _ = read_files(tmp_path, [MAIN])
    assert not files["main"].legacy

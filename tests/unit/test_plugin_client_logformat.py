"""Log lines shared by the agent and the plugins: interLink's levels, JSON lines with the pod, job and
trace a line is about, and text lines that name the pod when the message does not."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from plugin_client.logformat import (
    configure_logging,
    format_from,
    level_for,
    pod_fields,
)

UID = "8d6f3c2a-1b4e-4f5a-9c7d-0e1f2a3b4c5d"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(("verbose", "errors_only", "level"),
                         [(False, False, logging.INFO), (True, False, logging.DEBUG),
                          (False, True, logging.ERROR), (True, True, logging.DEBUG)])
def test_levels_follow_interlinks_verbose_and_errors_only_keys(verbose: bool, errors_only: bool, level: int) -> None:
    assert level_for(verbose, errors_only) == level


def test_json_lines_carry_pod_job_and_trace(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("create") as span:
        logging.getLogger("vnode.test").info("submitted %s", "job 7", extra=pod_fields("team", "burn", UID, "7"))
    logging.getLogger("vnode.test").debug("not shown at INFO")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "submitted job 7" and record["level"] == "INFO" and record["logger"] == "vnode.test"
    assert (record["pod_namespace"], record["pod_name"], record["pod_uid"], record["job_id"]) == ("team", "burn", UID, "7")
    assert record["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert record["time"].endswith("Z")


def test_json_keeps_a_traceback_on_one_line(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("vnode.test").exception("failed")
    (line,) = out.getvalue().splitlines()
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_text_lines_name_the_pod_unless_the_message_does(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "text", out)
    log = logging.getLogger("vnode.test")
    log.info("cancelled", extra=pod_fields("team", "burn", UID, "7"))
    log.info("pod team/burn uid %s: cancelled", UID, extra=pod_fields("team", "burn", UID, "7"))
    first, second = out.getvalue().splitlines()
    assert first.endswith(f"vnode.test: cancelled [pod=team/burn uid={UID} job=7]")
    assert second.endswith(f"pod team/burn uid {UID}: cancelled")


def test_the_format_comes_from_the_flag_then_the_environment() -> None:
    assert format_from({}) == "text"
    assert format_from({"VNODE_LOG_FORMAT": "JSON"}) == "json"
    assert format_from({"VNODE_LOG_FORMAT": "json"}, "text") == "text"
    with pytest.raises(ValueError, match="yaml"):
        configure_logging(logging.INFO, "yaml")

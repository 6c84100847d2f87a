"""Log output shared by the agent and the plugins: interLink's levels, and text or JSON lines that
carry the pod and job a line is about and the current trace.

Levels follow interLink's config keys: ``VerboseLogging`` → DEBUG, ``ErrorsOnlyLogging`` → ERROR
(verbose wins when both are set), otherwise INFO.

A line about a pod passes ``extra=pod_fields(namespace, name, uid, job_id)`` (or ``pod_fields_of(pod)``
for a pod dict, which reads the job id from its JobID annotation), with whatever of these is known
where the line is written. In JSON each line is one object::

    {"time": "2026-11-25T21:00:00.123456Z", "level": "INFO", "logger": "vnode.plugins.slurm.service",
     "message": "...", "pod_namespace": "team", "pod_name": "burn", "pod_uid": "8d6f...", "job_id": "1426",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

(pod and trace keys only when known). Text lines are ``<time> <LEVEL> <logger>: <message>``, with
``[pod=ns/name uid=... job=...]`` appended when the message does not already name them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

__all__ = [
    "FORMATS",
    "JOB_ID_ANNOTATION",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "level_for",
    "pod_fields",
    "pod_fields_of",
]

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
POD_KEYS = ("pod_namespace", "pod_name", "pod_uid", "job_id")
JOB_ID_ANNOTATION = "JobID"  # interLink's annotation: where the agent records a pod's job id


def level_for(verbose: bool, errors_only: bool) -> int:
    """interLink's VerboseLogging / ErrorsOnlyLogging as a logging level."""
    if verbose:
        return logging.DEBUG
    if errors_only:
        return logging.ERROR
    return logging.INFO


def pod_fields(namespace: str, name: str, uid: str, job_id: str = "") -> dict[str, str]:
    """``extra=`` for a log call about a pod."""
    return {"pod_namespace": namespace, "pod_name": name, "pod_uid": uid, "job_id": job_id}


def pod_fields_of(pod: Mapping[str, Any], job_id: str = "") -> dict[str, str]:
    """``extra=`` for a log call about the pod dict ``pod``: its namespace/name/uid, and the job id
    (``job_id``, else the pod's JobID annotation). Missing or malformed fields become ``""``."""
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(meta, Mapping):
        meta = {}
    annotations = meta.get("annotations")
    if not job_id and isinstance(annotations, Mapping):
        job_id = _text(annotations.get(JOB_ID_ANNOTATION))
    return pod_fields(_text(meta.get("namespace")), _text(meta.get("name")), _text(meta.get("uid")), job_id)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _pod_values(record: logging.LogRecord) -> dict[str, str]:
    return {key: value for key in POD_KEYS if isinstance(value := getattr(record, key, None), str) and value}


def _trace_values() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (no newline inside: tracebacks are a string field)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_pod_values(record))
        line.update(_trace_values())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        values = _pod_values(record)
        uid = values.get("pod_uid", "")
        if values and not (uid and uid in record.getMessage()):
            parts = [f"pod={values.get('pod_namespace', '')}/{values.get('pod_name', '')}"]
            if uid:
                parts.append(f"uid={uid}")
            if values.get("job_id"):
                parts.append(f"job={values['job_id']}")
            first, newline, rest = text.partition("\n")
            text = f"{first} [{' '.join(parts)}]{newline}{rest}"
        return text


def configure_logging(level: int, fmt: str = "text", stream: TextIO | None = None) -> None:
    """The root logger's one handler, at ``level`` in ``fmt`` (``text`` or ``json``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def format_from(env: Mapping[str, str], flag: str | None = None) -> str:
    """The log format: the command-line flag, else ``VNODE_LOG_FORMAT``, else text."""
    return (flag or env.get("VNODE_LOG_FORMAT") or "text").strip().lower()

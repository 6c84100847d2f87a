"""Parsing kubelet request targets into typed, validated requests. Pure; no I/O.

Nothing from the path reaches a filesystem or a shell: every segment is percent-decoded and
then must match the Kubernetes name grammar, or the request is refused with 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, unquote

# DNS-1123 label: namespaces and container names.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_MAX = 63
# DNS-1123 subdomain: pod names.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MAX = 253
# Pod UIDs are UUIDs in practice; allow the character set of any UID the apiserver mints.
_UID = re.compile(r"[A-Za-z0-9-]{1,128}")


class BadRequest(Exception):
    """400: the request is malformed. The message names the field."""


class Invalid(Exception):
    """422: well-formed but invalid options (the kubelet's ValidatePodLogOptions)."""


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    pod: str
    uid: str | None
    container: str


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    since_seconds: int | None = None
    since_time: datetime | None = None
    tail_lines: int | None = None
    limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ExecOptions:
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks for. ``kind``: healthz, pods, logs, exec, attach, stats, metrics,
    portforward, or unknown. ``subresource``: the ``nodes/<x>`` it is authorized against."""

    kind: str
    subresource: str
    path: str
    query: dict[str, list[str]]


def parse_target(raw_target: str) -> Target:
    path, _, query_string = raw_target.partition("?")
    try:
        query = parse_qs(query_string, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise BadRequest(f"malformed query string: {exc}") from exc
    kind, subresource = _classify(path)
    return Target(kind=kind, subresource=subresource, path=path, query=query)


def _classify(path: str) -> tuple[str, str]:
    first = path.lstrip("/").split("/", 1)[0]
    if path in ("/healthz", "/healthz/"):
        return "healthz", "healthz"
    if path in ("/pods", "/pods/"):
        return "pods", "pods"
    # The kubelet's auth.go: /stats, /metrics and /logs have subresources of their own;
    # everything else (containerLogs, exec, attach, portForward, run) is nodes/proxy.
    table = {
        "containerLogs": ("logs", "proxy"),
        "exec": ("exec", "proxy"),
        "attach": ("attach", "proxy"),
        "portForward": ("portforward", "proxy"),
        "stats": ("stats", "stats"),
        "metrics": ("metrics", "metrics"),
        "logs": ("nodelogs", "log"),
    }
    return table.get(first, ("unknown", "proxy"))


def _segments(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return [unquote(p, errors="strict") for p in parts]


def _check(value: str, what: str, pattern: re.Pattern[str], max_len: int) -> str:
    if not value or len(value) > max_len or not pattern.fullmatch(value):
        raise BadRequest(f"invalid {what} {value!r}: must be a lower-case DNS-1123 name")
    return value


def parse_pod_ref(path: str, *, allow_uid: bool) -> PodRef:
    """``/<verb>/{ns}/{pod}/{container}`` or, if ``allow_uid``, ``/<verb>/{ns}/{pod}/{uid}/{container}``."""
    try:
        parts = _segments(path)[1:]
    except UnicodeDecodeError as exc:
        raise BadRequest("path is not valid UTF-8 after percent-decoding") from exc
    uid = None
    if len(parts) == 4 and allow_uid:
        namespace, pod, uid, container = parts
        if not _UID.fullmatch(uid):
            raise BadRequest(f"invalid pod uid {uid!r}")
    elif len(parts) == 3:
        namespace, pod, container = parts
    else:
        shape = "{namespace}/{pod}[/{uid}]/{container}" if allow_uid else "{namespace}/{pod}/{container}"
        raise BadRequest(f"path must be /{path.strip('/').split('/')[0]}/{shape}")
    return PodRef(
        namespace=_check(namespace, "namespace", _LABEL, _LABEL_MAX),
        pod=_check(pod, "pod name", _SUBDOMAIN, _SUBDOMAIN_MAX),
        uid=uid,
        container=_check(container, "container name", _LABEL, _LABEL_MAX),
    )


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    return values[0]  # Go's query decoding takes the first value too


def _bool(query: dict[str, list[str]], name: str) -> bool:
    value = _one(query, name)
    if value is None:
        return False
    if value in _TRUE:
        return True
    if value in _FALSE or value == "":
        return False
    raise BadRequest(f"query parameter {name}={value!r} is not a boolean")


def _int(query: dict[str, list[str]], name: str) -> int | None:
    value = _one(query, name)
    if value is None:
        return None
    try:
        return int(value, 10)
    except ValueError:
        raise BadRequest(f"query parameter {name}={value!r} is not an integer") from None


def _time(query: dict[str, list[str]], name: str) -> datetime | None:
    value = _one(query, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"query parameter {name}={value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise BadRequest(f"query parameter {name}={value!r} is not an RFC 3339 time")
    return parsed


def parse_log_options(query: dict[str, list[str]]) -> LogOptions:
    """The kubelet's decoding of ``v1.PodLogOptions`` plus the legacy ``tail`` parameter."""
    query = dict(query)
    tail = _one(query, "tail")
    if tail:
        query.pop("tailLines", None)
        if tail != "all":  # "all" is the same as no tail at all
            query["tailLines"] = [tail]
    options = LogOptions(
        follow=_bool(query, "follow"),
        previous=_bool(query, "previous"),
        timestamps=_bool(query, "timestamps"),
        since_seconds=_int(query, "sinceSeconds"),
        since_time=_time(query, "sinceTime"),
        tail_lines=_int(query, "tailLines"),
        limit_bytes=_int(query, "limitBytes"),
    )
    if options.tail_lines is not None and options.tail_lines < 0:
        raise Invalid("tailLines: must be greater than or equal to 0")
    if options.limit_bytes is not None and options.limit_bytes < 1:
        raise Invalid("limitBytes: must be greater than 0")
    if options.since_seconds is not None and options.since_seconds < 1:
        raise Invalid("sinceSeconds: must be greater than 0")
    if options.since_seconds is not None and options.since_time is not None:
        raise Invalid("at most one of sinceTime or sinceSeconds may be specified")
    return options


def _flag(query: dict[str, list[str]], name: str) -> bool:
    # The kubelet reads these as exactly "1" (remotecommand NewOptions); "true" is a courtesy.
    return _one(query, name) in ("1", "true")


def parse_exec_options(query: dict[str, list[str]], *, attach: bool) -> ExecOptions:
    command = tuple(query.get("command", []))
    options = ExecOptions(
        command=command,
        stdin=_flag(query, "input"),
        stdout=_flag(query, "output"),
        stderr=_flag(query, "error"),
        tty=_flag(query, "tty"),
    )
    if not attach and not command:
        raise BadRequest("command is required: pass it as repeated command= parameters")
    if attach and command:
        raise BadRequest("attach takes no command")
    if not (options.stdin or options.stdout or options.stderr):
        raise BadRequest("you must specify at least one of input, output or error")
    if options.tty and options.stderr:
        # The kubelet drops stderr with a tty (the terminal merges it into stdout).
        options = ExecOptions(command, options.stdin, options.stdout, False, True)
    return options

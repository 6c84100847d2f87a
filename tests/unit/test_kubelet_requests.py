"""Parsing kubelet request paths and queries: the rules a real kubelet applies."""

from __future__ import annotations

import datetime as dt

import pytest

from vnode.kubelet import requests as rq
from vnode.kubelet import streamprotocol as sp


@pytest.mark.parametrize(
    ("path", "kind", "subresource"),
    [
        ("/containerLogs/ns/pod/c", "logs", "proxy"),
        ("/exec/ns/pod/c", "exec", "proxy"),
        ("/attach/ns/pod/c", "attach", "proxy"),
        ("/portForward/ns/pod", "portforward", "proxy"),
        ("/stats/summary", "stats", "stats"),
        ("/metrics/resource", "metrics", "metrics"),
        ("/logs/syslog", "nodelogs", "log"),
        ("/pods", "pods", "pods"),
        ("/healthz", "healthz", "healthz"),
        ("/configz", "unknown", "proxy"),
    ],
)
def test_paths_map_to_the_kubelets_authorization_subresources(path: str, kind: str, subresource: str) -> None:
    target = rq.parse_target(path + "?x=1")
    assert (target.kind, target.subresource, target.path) == (kind, subresource, path)


def test_repeated_command_parameters_keep_their_order() -> None:
    target = rq.parse_target("/exec/a/b/c?command=sh&command=-c&command=echo%20hi%3B%20exit%203&output=1")
    options = rq.parse_exec_options(target.query, attach=False)
    assert options.command == ("sh", "-c", "echo hi; exit 3")


def test_pod_ref_with_and_without_uid() -> None:
    assert rq.parse_pod_ref("/exec/ns/my.pod-1/ctr", allow_uid=True) == rq.PodRef("ns", "my.pod-1", None, "ctr")
    ref = rq.parse_pod_ref("/exec/ns/pod/0e3c6f7a-1111/ctr", allow_uid=True)
    assert ref.uid == "0e3c6f7a-1111"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/containerLogs/NS/pod/c", "namespace"),
        ("/containerLogs/ns/Pod/c", "pod name"),
        ("/containerLogs/ns/pod/c.d", "container name"),
        ("/containerLogs/ns/..%2F..%2Fetc/c", "pod name"),
        ("/containerLogs/ns/pod/%2e%2e", "container name"),
        ("/containerLogs/ns/pod/$(reboot)", "container name"),
        ("/containerLogs/ns/pod/" + "a" * 64, "container name"),
        ("/containerLogs/-ns/pod/c", "namespace"),
    ],
)
def test_hostile_or_malformed_names_are_bad_requests_naming_the_field(path: str, field: str) -> None:
    with pytest.raises(rq.BadRequest, match=field):
        rq.parse_pod_ref(path, allow_uid=False)


def test_wrong_number_of_segments_is_a_bad_request() -> None:
    with pytest.raises(rq.BadRequest, match="must be"):
        rq.parse_pod_ref("/containerLogs/ns/pod", allow_uid=False)
    with pytest.raises(rq.BadRequest, match="must be"):
        rq.parse_pod_ref("/containerLogs/ns/pod/uid/c", allow_uid=False)


def test_log_options_decode_like_pod_log_options() -> None:
    options = rq.parse_log_options(
        {"follow": ["true"], "timestamps": ["1"], "tailLines": ["5"], "limitBytes": ["100"],
         "sinceTime": ["2026-01-02T03:04:05Z"], "previous": ["false"]}
    )
    assert options == rq.LogOptions(
        follow=True, previous=False, timestamps=True, tail_lines=5, limit_bytes=100,
        since_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


def test_legacy_tail_parameter_overrides_tail_lines_and_all_means_everything() -> None:
    assert rq.parse_log_options({"tail": ["7"], "tailLines": ["2"]}).tail_lines == 7
    assert rq.parse_log_options({"tail": ["all"], "tailLines": ["2"]}).tail_lines is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"follow": ["maybe"]}, "follow"),
        ({"tailLines": ["ten"]}, "tailLines"),
        ({"sinceSeconds": ["1.5"]}, "sinceSeconds"),
        ({"sinceTime": ["yesterday"]}, "sinceTime"),
        ({"sinceTime": ["2026-01-02"]}, "sinceTime"),
        ({"sinceTime": ["2026-01-02T03:04:05"]}, "sinceTime"),
        ({"limitBytes": ["1e3"]}, "limitBytes"),
    ],
)
def test_unparsable_log_options_are_bad_requests(query: dict[str, list[str]], field: str) -> None:
    with pytest.raises(rq.BadRequest, match=field):
        rq.parse_log_options(query)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"tailLines": ["-1"]}, "tailLines"),
        ({"limitBytes": ["0"]}, "limitBytes"),
        ({"sinceSeconds": ["0"]}, "sinceSeconds"),
        ({"sinceSeconds": ["5"], "sinceTime": ["2026-01-02T03:04:05Z"]}, "at most one"),
    ],
)
def test_invalid_log_options_are_unprocessable(query: dict[str, list[str]], field: str) -> None:
    with pytest.raises(rq.Invalid, match=field):
        rq.parse_log_options(query)


def test_exec_needs_a_command_and_a_stream() -> None:
    with pytest.raises(rq.BadRequest, match="command"):
        rq.parse_exec_options({"output": ["1"]}, attach=False)
    with pytest.raises(rq.BadRequest, match="at least one"):
        rq.parse_exec_options({"command": ["ls"]}, attach=False)
    with pytest.raises(rq.BadRequest, match="no command"):
        rq.parse_exec_options({"command": ["ls"], "output": ["1"]}, attach=True)


def test_tty_drops_stderr_like_the_kubelet() -> None:
    options = rq.parse_exec_options({"command": ["sh"], "output": ["1"], "error": ["1"], "tty": ["1"]}, attach=False)
    assert (options.stdout, options.stderr, options.tty) == (True, False, True)


def test_protocol_negotiation_takes_the_first_client_protocol_we_support() -> None:
    assert sp.negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]) == sp.V5
    assert sp.negotiate(["v9.channel.k8s.io", "v3.channel.k8s.io, v2.channel.k8s.io"]) == sp.V3
    assert sp.negotiate(["v2.channel.k8s.io,v4.channel.k8s.io"]) == sp.V2  # client order wins
    assert sp.negotiate([]) == sp.V1  # pre-versioning clients


def test_protocol_negotiation_failure_lists_what_we_support() -> None:
    with pytest.raises(sp.NoCommonProtocol) as info:
        sp.negotiate(["v9.channel.k8s.io"])
    assert "v5.channel.k8s.io" in str(info.value) and "v9.channel.k8s.io" in str(info.value)

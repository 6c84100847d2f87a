"""Status bodies reuse the Go-JSON bytes of unchanged pods, and stay byte-identical."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from plugin_client.models import encode
from plugin_client.podcache import EncodedPods


def pod(uid: str, rv: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{uid}", "namespace": "ns", "uid": uid, "resourceVersion": rv,
                         "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo <&>"]}]},
            "status": {"phase": "Running"}}


def test_list_bytes_equal_a_fresh_go_encoding() -> None:
    pods = [pod("a", "1"), pod("b", "7", tier="x\u2028y")]
    cache = EncodedPods()
    assert cache.pod_list(pods) == encode(pods)
    assert cache.pod_list(pods) == encode(pods)
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_new_resource_version_is_encoded_again() -> None:
    cache = EncodedPods()
    cache.pod_list([pod("a", "1", v="old")])
    changed = pod("a", "2", v="new")
    assert cache.pod_list([changed]) == encode([changed])
    assert len(cache) == 1


def test_pods_without_uid_or_version_are_never_cached() -> None:
    cache = EncodedPods()
    bare = {"metadata": {"name": "x"}, "spec": {}}
    assert cache.pod_list([bare, bare]) == encode([bare, bare])
    assert len(cache) == 0 and cache.hits == 0


def test_the_cache_stays_within_its_byte_bound_dropping_the_least_recent() -> None:
    one = len(encode(pod("a", "1")))
    cache = EncodedPods(max_bytes=2 * one + 1)
    cache.pod_list([pod("a", "1"), pod("b", "1")])
    cache.pod_list([pod("a", "1")])  # a is now the most recent
    cache.pod_list([pod("c", "1")])
    cache.pod_list([pod("a", "1")])
    assert cache.hits == 2  # a stayed, b was dropped


def test_an_empty_list_is_an_empty_array() -> None:
    assert EncodedPods().pod_list([]) == b"[]" == encode([])


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("123"),
                          st.text(max_size=8)), max_size=6))
def test_any_sequence_of_calls_matches_fresh_encoding(calls: list[tuple[str, str, str]]) -> None:
    cache = EncodedPods(max_bytes=600)
    # A given (uid, resourceVersion) always has the same content, as in Kubernetes.
    content = {(uid, rv): text for uid, rv, text in reversed(calls)}
    for uid, rv, _ in calls:
        pods = [pod(uid, rv, note=content[(uid, rv)]), pod("z", "9")]
        assert cache.pod_list(copy.deepcopy(pods)) == encode(pods)

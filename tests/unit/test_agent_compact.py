"""Cached pods share their keys and short strings, without changing a value."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vnode.kube.compact import SHORT, compact_pod, interned


def pod(name: str, phase: str = "Running", **meta: Any) -> dict[str, Any]:
    # Parsed from text, as the informer gets them: no strings shared between two pods.
    return json.loads(json.dumps({
        "metadata": {"name": name, "uid": f"uid-{name}", "managedFields": [{"manager": "x"}], **meta},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"]}],
                 "dnsPolicy": "ClusterFirst"},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}}))


def test_settled_pods_share_keys_and_short_values() -> None:
    a, b = compact_pod(pod("a")), compact_pod(pod("b"))
    key_a = next(k for k in a["spec"] if k == "dnsPolicy")
    key_b = next(k for k in b["spec"] if k == "dnsPolicy")
    assert key_a is key_b
    assert a["spec"]["containers"][0]["image"] is b["spec"]["containers"][0]["image"]
    assert a["status"]["conditions"][0]["status"] is b["status"]["conditions"][0]["status"]


def test_compacting_drops_managed_fields_and_changes_no_value() -> None:
    original = pod("a")
    compacted = compact_pod(copy.deepcopy(original))
    del original["metadata"]["managedFields"]
    assert compacted == original


def test_pods_on_their_way_in_or_out_are_left_as_they_are() -> None:
    for version in (pod("a", phase="Pending"), pod("a", deletionTimestamp="2026-01-01T00:00:00Z")):
        same = compact_pod(version)
        assert same is version and "managedFields" not in same["metadata"]


def test_long_strings_are_not_interned() -> None:
    text = "x" * (SHORT + 1)
    a = interned({"k": json.loads(json.dumps(text))})
    b = interned({"k": json.loads(json.dumps(text))})
    assert a["k"] == b["k"] and a["k"] is not b["k"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=30)


@given(json_values)
def test_interning_any_json_value_keeps_it_equal(value: Any) -> None:
    assert interned(value) == value

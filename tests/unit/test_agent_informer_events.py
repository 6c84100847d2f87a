"""How the informer applies single watch events to its cache (pure: no request is sent)."""

from __future__ import annotations

from typing import Any, cast

from vnode.kube.client import KubeClient
from vnode.kube.informer import Informer


def pod(uid: str, rv: str, phase: str = "Pending") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": rv},
            "status": {"phase": phase}}


def informer() -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    # apply() never touches the client: it only folds an event already received into the cache.
    inf = Informer(cast(KubeClient, None), "/api/v1/pods", lambda etype, obj: seen.append((etype, obj["metadata"]["uid"])))
    return inf, seen


def test_a_bookmark_moves_the_resume_point_without_touching_the_cache_or_the_handler() -> None:
    inf, seen = informer()
    inf.apply("ADDED", pod("a", "10"))
    inf.apply("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}})
    assert inf.resource_version == "42"  # the next WATCH resumes after everything the server skipped
    assert list(inf.cache) == ["a"] and inf.cache["a"]["metadata"]["resourceVersion"] == "10"
    assert seen == [("ADDED", "a")]


def test_a_bookmark_without_a_resource_version_keeps_the_old_one() -> None:
    inf, _ = informer()
    inf.apply("ADDED", pod("a", "10"))
    inf.apply("BOOKMARK", {"metadata": {}})
    assert inf.resource_version == "10"


def test_modified_and_deleted_update_the_cache_in_order() -> None:
    inf, seen = informer()
    inf.apply("ADDED", pod("a", "1"))
    inf.apply("MODIFIED", pod("a", "2", "Running"))
    assert inf.cache["a"]["status"]["phase"] == "Running"
    inf.apply("DELETED", pod("a", "3", "Running"))
    assert inf.cache == {} and inf.resource_version == "3"
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_an_unknown_event_type_is_ignored_and_not_handed_on() -> None:
    inf, seen = informer()
    inf.apply("SURPRISE", pod("a", "5"))
    assert inf.cache == {} and seen == []

"""Authentication and authorization decisions, and their caching."""

from __future__ import annotations

import pytest

from tests.kubelet_support import InMemoryReviews
from vnode.kubelet.auth import (
    AUTHORIZED_TTL,
    UNAUTHORIZED_TTL,
    Forbidden,
    RequestAuthority,
    Unauthenticated,
    bearer_token,
    user_from_certificate,
    verb_for,
)
from vnode.kubelet.backends import UserInfo
from vnode.kubelet.requests import parse_target

PEERCERT = {
    "subject": ((("organizationName", "system:masters"),), (("organizationName", "ops"),),
                (("commonName", "kube-apiserver-kubelet-client"),)),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authority(reviews: InMemoryReviews, clock: Clock | None = None) -> RequestAuthority:
    return RequestAuthority(reviews, "node-a", clock=clock or Clock())


def test_certificate_cn_is_the_user_and_every_o_a_group() -> None:
    user = user_from_certificate(PEERCERT)
    assert user == UserInfo("kube-apiserver-kubelet-client", "", ("system:masters", "ops", "system:authenticated"))


def test_no_verified_certificate_means_no_certificate_user() -> None:
    assert user_from_certificate({}) is None
    assert user_from_certificate(None) is None


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_token("Basic Zm9vOmJhcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_http_methods_map_to_verbs_like_the_kubelet() -> None:
    assert [verb_for(m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")] == ["get", "create", "update", "patch", "delete"]


async def test_anonymous_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        await authority(InMemoryReviews()).authenticate({}, None)


async def test_certificate_wins_over_a_token() -> None:
    reviews = InMemoryReviews(tokens={"t": UserInfo("alice")})
    user = await authority(reviews).authenticate(PEERCERT, "Bearer t")
    assert user.name == "kube-apiserver-kubelet-client"
    assert reviews.token_calls == 0


async def test_tokens_are_reviewed_once_and_cached() -> None:
    reviews = InMemoryReviews(tokens={"t": UserInfo("alice", "uid-1", ("devs",))})
    auth = authority(reviews)
    first = await auth.authenticate({}, "Bearer t")
    second = await auth.authenticate({}, "Bearer t")
    assert first == second == UserInfo("alice", "uid-1", ("devs", "system:authenticated"))
    assert reviews.token_calls == 1
    with pytest.raises(Unauthenticated):
        await auth.authenticate({}, "Bearer nope")
    with pytest.raises(Unauthenticated):
        await auth.authenticate({}, "Bearer nope")
    assert reviews.token_calls == 2  # the failure is cached too


async def test_failed_token_review_is_a_401_not_a_crash() -> None:
    class Broken(InMemoryReviews):
        async def token_review(self, token: str) -> UserInfo | None:
            raise OSError("apiserver unreachable")

    with pytest.raises(Unauthenticated, match="unreachable"):
        await authority(Broken()).authenticate({}, "Bearer t")


async def test_exec_post_needs_create_on_nodes_proxy_for_this_node() -> None:
    reviews = InMemoryReviews(grants={"alice": {("create", "proxy")}})
    auth = authority(reviews)
    alice = UserInfo("alice")
    await auth.authorize(alice, "POST", parse_target("/exec/ns/p/c?command=ls"))
    assert reviews.sar_calls == [("alice", "create", "nodes", "proxy", "node-a")]
    with pytest.raises(Forbidden) as info:
        await auth.authorize(alice, "GET", parse_target("/containerLogs/ns/p/c"))
    assert str(info.value).startswith("Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)")


async def test_stats_and_metrics_use_their_own_subresources() -> None:
    reviews = InMemoryReviews(grants={"ms": {("get", "metrics")}})
    auth = authority(reviews)
    await auth.authorize(UserInfo("ms"), "GET", parse_target("/metrics/resource"))
    with pytest.raises(Forbidden, match="subresource=stats"):
        await auth.authorize(UserInfo("ms"), "GET", parse_target("/stats/summary"))


async def test_pods_tries_the_fine_grained_subresource_then_proxy() -> None:
    reviews = InMemoryReviews(grants={"a": {("get", "proxy")}})
    await authority(reviews).authorize(UserInfo("a"), "GET", parse_target("/pods"))
    assert [c[3] for c in reviews.sar_calls] == ["pods", "proxy"]


async def test_healthz_is_open_to_any_authenticated_caller() -> None:
    reviews = InMemoryReviews()
    await authority(reviews).authorize(UserInfo("anyone"), "GET", parse_target("/healthz"))
    assert reviews.sar_calls == []


async def test_decisions_are_cached_5_minutes_when_allowed_and_30_s_when_denied() -> None:
    clock = Clock()
    reviews = InMemoryReviews(grants={"a": {("get", "proxy")}})
    auth = authority(reviews, clock)
    logs = parse_target("/containerLogs/ns/p/c")
    await auth.authorize(UserInfo("a"), "GET", logs)
    reviews.grants["a"] = set()
    clock.now += AUTHORIZED_TTL - 1
    await auth.authorize(UserInfo("a"), "GET", logs)  # still cached
    assert len(reviews.sar_calls) == 1
    clock.now += 2
    with pytest.raises(Forbidden):
        await auth.authorize(UserInfo("a"), "GET", logs)
    reviews.grants["a"] = {("get", "proxy")}
    clock.now += UNAUTHORIZED_TTL - 1
    with pytest.raises(Forbidden):  # the denial is cached
        await auth.authorize(UserInfo("a"), "GET", logs)
    clock.now += 2
    await auth.authorize(UserInfo("a"), "GET", logs)
    assert len(reviews.sar_calls) == 3


async def test_cache_distinguishes_groups() -> None:
    reviews = InMemoryReviews(grants={"a": {("get", "proxy")}})
    auth = authority(reviews)
    await auth.authorize(UserInfo("a", groups=("x",)), "GET", parse_target("/containerLogs/n/p/c"))
    await auth.authorize(UserInfo("a", groups=("y",)), "GET", parse_target("/containerLogs/n/p/c"))
    assert len(reviews.sar_calls) == 2

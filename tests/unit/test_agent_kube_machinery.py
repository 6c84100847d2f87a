"""The apiserver adapter's pure parts: error classification, the retry policy, the token bucket,
quantities, watch-line splitting and the relist diff."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnode.kube.client import LineSplitter
from vnode.kube.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Transient,
    classify,
)
from vnode.kube.informer import ADDED, DELETED, MODIFIED, diff_relist
from vnode.kube.quantity import QuantityError, parse_quantity, resource_field_value
from vnode.kube.ratelimit import TokenBucket
from vnode.kube.retry import Backoff, RetryPolicy, parse_retry_after


@pytest.mark.parametrize(("status", "reason", "cls"), [
    (404, "NotFound", NotFound), (409, "Conflict", Conflict), (409, "AlreadyExists", AlreadyExists),
    (410, "Expired", Gone), (401, "Unauthorized", Forbidden), (403, "Forbidden", Forbidden),
    (422, "Invalid", Invalid), (400, "BadRequest", Invalid), (429, "TooManyRequests", Transient),
    (500, "InternalError", Transient), (503, "ServiceUnavailable", Transient),
    (504, "Timeout", Transient), (418, "Teapot", KubeError),
])
def test_statuses_are_classified_once(status: int, reason: str, cls: type[KubeError]) -> None:
    err = classify(status, {"kind": "Status", "reason": reason, "message": "detail"},
                   context="GET /api/v1/x")
    assert type(err) is cls
    assert "GET /api/v1/x" in str(err) and "detail" in str(err)


def test_retry_after_is_kept_on_transient_errors() -> None:
    err = classify(429, {"reason": "TooManyRequests"}, context="c", retry_after=3.0)
    assert isinstance(err, Transient) and err.retry_after == 3.0


def test_retry_policy_honours_retry_after_up_to_a_cap() -> None:
    policy = RetryPolicy(attempts=5, max_retry_after=10.0)
    assert policy.next_delay(Transient("x", retry_after=2.0), 0) == 2.0
    assert policy.next_delay(Transient("x", retry_after=500.0), 0) == 10.0


def test_retry_policy_gives_up_on_permanent_errors_and_after_the_attempt_budget() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.next_delay(NotFound("x"), 0) is None
    assert policy.next_delay(Conflict("x"), 0) is None
    assert policy.next_delay(Transient("x"), 1) is not None
    assert policy.next_delay(Transient("x"), 2) is None


@given(st.integers(min_value=0, max_value=100))
def test_backoff_is_capped_and_positive(attempt: int) -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=30.0, jitter=0.2)
    assert 0 < backoff.delay(attempt) <= 30.0


def test_backoff_grows_exponentially_without_jitter() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=10.0, jitter=0.0)
    assert [backoff.delay(i) for i in range(6)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(("header", "value"), [("3", 3.0), (" 1.5 ", 1.5), ("", None), (None, None),
                                               ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("-1", None)])
def test_retry_after_header_parsing(header: str | None, value: float | None) -> None:
    assert parse_retry_after(header) == value


def test_token_bucket_allows_a_burst_then_refills_at_qps() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=3, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.delay_for_next() == pytest.approx(0.1)
    now[0] += 0.25
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


def test_token_bucket_with_zero_qps_does_not_limit() -> None:
    bucket = TokenBucket(qps=0, burst=1)
    assert all(bucket.try_take() for _ in range(1000))


async def test_token_bucket_acquire_waits_for_a_token() -> None:
    bucket = TokenBucket(qps=1000, burst=1)
    await bucket.acquire()
    await asyncio.wait_for(bucket.acquire(), timeout=5)  # the second waits ~1 ms, not forever
    assert not bucket.try_take()


@pytest.mark.parametrize(("text", "value"), [
    ("100", Fraction(100)), ("500m", Fraction(1, 2)), ("1.5", Fraction(3, 2)), ("128Gi", 128 * 2**30),
    ("3000G", 3 * 10**12), ("1e3", Fraction(1000)), ("2E-3", Fraction(2, 1000)), ("0.1", Fraction(1, 10)),
    (".5", Fraction(1, 2)), ("+1", Fraction(1)), ("-2", Fraction(-2)), (7, Fraction(7)),
])
def test_quantities_parse_exactly(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "12Qi", "1 Gi", "Gi", True])
def test_bad_quantities_name_the_text(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)  # type: ignore[arg-type]


def test_resource_field_values_round_up() -> None:
    assert resource_field_value("cpu", Fraction(1, 1000), Fraction(1)) == "1"
    assert resource_field_value("memory", Fraction(1025), Fraction(1024)) == "2"


def test_watch_lines_are_split_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b':2}\n\n') == [b'{"b":2}']
    assert splitter.feed(b"") == []


@given(st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b and b.strip()),
                max_size=10), st.integers(min_value=1, max_value=7))
def test_watch_line_splitting_is_independent_of_chunking(lines: list[bytes], size: int) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter()
    got: list[bytes] = []
    for i in range(0, len(stream), size):
        got.extend(splitter.feed(stream[i:i + size]))
    assert got == [line.strip() for line in lines]


def test_an_endless_line_is_refused() -> None:
    splitter = LineSplitter(max_line=10)
    with pytest.raises(ValueError):
        splitter.feed(b"x" * 11)


def obj(uid: str, rv: str, name: str = "p") -> dict[str, object]:
    return {"metadata": {"uid": uid, "resourceVersion": rv, "name": name}}


def test_relist_reports_what_the_watch_missed() -> None:
    cache = {"a": obj("a", "1"), "b": obj("b", "1"), "c": obj("c", "1")}
    events = diff_relist(cache, [obj("a", "1"), obj("b", "5"), obj("d", "6")])  # type: ignore[arg-type]
    assert [(t, o["metadata"]["uid"]) for t, o in events] == [  # type: ignore[index]
        (DELETED, "c"), (MODIFIED, "b"), (ADDED, "d")]


def test_a_name_reused_by_a_new_pod_is_a_delete_and_an_add() -> None:
    events = diff_relist({"old": obj("old", "1", "same")}, [obj("new", "2", "same")])  # type: ignore[arg-type,list-item]
    assert [(t, o["metadata"]["uid"]) for t, o in events] == [(DELETED, "old"), (ADDED, "new")]  # type: ignore[index]

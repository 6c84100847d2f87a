"""Who is calling, and may they? The kubelet's authn/authz, against the apiserver.

Authentication, in the kubelet's order: a client certificate verified against the cluster CA
(CN = user, O = groups), then a bearer token checked with TokenReview. Anyone else is
anonymous and refused (401). Authorization is a SubjectAccessReview of ``<verb> nodes/<sub>``
on this node; the verb comes from the HTTP method, the subresource from the path.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vnode.kubelet.backends import AccessDecision, ReviewClient, UserInfo
from vnode.kubelet.requests import Target

log = logging.getLogger(__name__)

# The kubelet's webhook cache defaults (pkg/kubelet/apis/config/v1beta1/defaults.go).
AUTHORIZED_TTL = 300.0
UNAUTHORIZED_TTL = 30.0
TOKEN_TTL = 120.0
# Failed TokenReviews are cached briefly so a misbehaving client cannot hammer the apiserver.
TOKEN_FAILURE_TTL = 10.0
# Bounds memory: far more distinct (user, verb, subresource) triples than a node ever sees.
CACHE_ENTRIES = 4096

AUTHENTICATED_GROUP = "system:authenticated"

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, clock: Callable[[], float], max_entries: int = CACHE_ENTRIES) -> None:
        self._clock = clock
        self._max = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires <= self._clock():
            del self._data[key]
            return None
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)


class Unauthenticated(Exception):
    """401."""


@dataclass(frozen=True, slots=True)
class Forbidden(Exception):
    """403, with the kubelet's message shape."""

    user: str
    verb: str
    subresource: str
    reason: str

    def __str__(self) -> str:
        text = (
            f"Forbidden (user={self.user}, verb={self.verb}, resource=nodes, "
            f"subresource={self.subresource})"
        )
        return f"{text}: {self.reason}" if self.reason else text


def user_from_certificate(peercert: Mapping[str, Any] | None) -> UserInfo | None:
    """CN → user name, every O → a group. ``peercert`` is ``SSLObject.getpeercert()``, which
    is only non-empty for a certificate that verified against the client CA."""
    if not peercert:
        return None
    name = ""
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return None
    return UserInfo(name=name, groups=(*groups, AUTHENTICATED_GROUP))


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verb_for(method: str) -> str:
    return _VERBS.get(method.upper(), method.lower())


class RequestAuthority:
    """Authenticates and authorizes kubelet requests, caching the apiserver's answers."""

    def __init__(
        self,
        reviews: ReviewClient,
        node_name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviews = reviews
        self._node = node_name
        # Values are 1-tuples so that a cached "not authenticated" (None) is still a hit.
        self._tokens: TTLCache[str, tuple[UserInfo | None]] = TTLCache(clock)
        self._decisions: TTLCache[tuple[object, ...], AccessDecision] = TTLCache(clock)

    async def authenticate(
        self, peercert: Mapping[str, Any] | None, authorization: str | None
    ) -> UserInfo:
        user = user_from_certificate(peercert)
        if user is not None:
            return user
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("no client certificate and no bearer token")
        hit = self._tokens.get(token)
        if hit is None:
            try:
                hit = (await self._reviews.token_review(token),)
            except Exception as exc:  # the kubelet answers 401 when the review itself fails
                log.warning("TokenReview failed: %s", exc)
                raise Unauthenticated(f"token review failed: {exc}") from exc
            self._tokens.put(token, hit, TOKEN_TTL if hit[0] is not None else TOKEN_FAILURE_TTL)
        cached = hit[0]
        if cached is None:
            raise Unauthenticated("invalid bearer token")
        groups = cached.groups
        if AUTHENTICATED_GROUP not in groups:
            groups = (*groups, AUTHENTICATED_GROUP)
        return UserInfo(cached.name, cached.uid, groups, cached.extra)

    async def authorize(self, user: UserInfo, method: str, target: Target) -> None:
        """Raises :class:`Forbidden` unless the user may make this request."""
        if target.kind == "healthz":
            return  # any authenticated caller may ask whether we are alive
        verb = verb_for(method)
        # /pods first tries the fine-grained nodes/pods, then nodes/proxy (KubeletFineGrainedAuthz).
        candidates = [target.subresource]
        if target.subresource not in ("proxy", "stats", "metrics", "log"):
            candidates.append("proxy")
        decision = AccessDecision(False, "")
        for subresource in candidates:
            decision = await self._review(user, verb, subresource)
            if decision.allowed:
                return
        raise Forbidden(user.name, verb, candidates[-1], decision.reason)

    async def _review(self, user: UserInfo, verb: str, subresource: str) -> AccessDecision:
        extra = tuple(sorted((k, tuple(v)) for k, v in user.extra.items()))
        key = (user.name, user.uid, user.groups, extra, verb, subresource)
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        decision = await self._reviews.subject_access_review(
            user, verb, "nodes", subresource, self._node
        )
        self._decisions.put(key, decision, AUTHORIZED_TTL if decision.allowed else UNAUTHORIZED_TTL)
        return decision

"""Who a request comes from and what the apiserver decided about it: the answers of a TokenReview
(authentication.k8s.io UserInfo) and of a SubjectAccessReview. Pure data, no I/O.

Shared by `vnode.kube.reviews` (which asks the apiserver) and the kubelet front (which asks
through a `ReviewClient`); it lives here so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    reason: str = ""

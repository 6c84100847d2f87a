"""TokenReview and SubjectAccessReview: the kubelet endpoint's delegated authn/authz.

Implements the kubelet front's `ReviewClient` protocol over the apiserver adapter. Both reviews are
creates of ephemeral objects; the apiserver answers in `status`.
"""

from __future__ import annotations

from typing import Any

from vnode.kube.client import KubeClient
from vnode.kube.identity import AccessDecision, UserInfo


class ApiReviewClient:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def token_review(self, token: str) -> UserInfo | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}}
        result: dict[str, Any] = await self.client.post(
            "/apis/authentication.k8s.io/v1/tokenreviews", body)
        status = result.get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        extra = {k: tuple(v or ()) for k, v in (user.get("extra") or {}).items()}
        return UserInfo(name=str(user.get("username", "")), uid=str(user.get("uid", "")),
                        groups=tuple(user.get("groups") or ()), extra=extra)

    async def subject_access_review(self, user: UserInfo, verb: str, resource: str,
                                    subresource: str, name: str) -> AccessDecision:
        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "resourceAttributes": {"verb": verb, "group": "", "version": "v1",
                                   "resource": resource, "subresource": subresource,
                                   "name": name},
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec}
        result: dict[str, Any] = await self.client.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        status = result.get("status") or {}
        return AccessDecision(allowed=bool(status.get("allowed")),
                              reason=str(status.get("reason") or status.get("evaluationError") or ""))

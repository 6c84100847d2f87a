"""The apiserver's version (`GET /version`), read once at start to decide what the Node may declare."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vnode.kube.client import KubeClient

# "v1.36.3", "v1.36.0-rc.1", "v1.30.2-gke.1587003": the numbers client-go's version.ParseGeneric reads.
_GIT_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
# "36", or "36+" on distributions that patch Kubernetes (GKE, EKS).
_NUMBER = re.compile(r"^(\d+)")


@dataclass(frozen=True, order=True)
class ServerVersion:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def parse_server_version(info: Any) -> ServerVersion | None:
    """Major and minor from a /version answer: gitVersion first (always semver on conformant
    clusters), else the major/minor fields; None when neither holds numbers."""
    if not isinstance(info, dict):
        return None
    git = _GIT_VERSION.match(str(info.get("gitVersion") or ""))
    if git:
        return ServerVersion(int(git[1]), int(git[2]))
    major = _NUMBER.match(str(info.get("major") or ""))
    minor = _NUMBER.match(str(info.get("minor") or ""))
    if major and minor:
        return ServerVersion(int(major[1]), int(minor[1]))
    return None


async def server_version(client: KubeClient) -> ServerVersion | None:
    """The apiserver's version; None when its answer carries none (then nothing version-gated is
    declared). Transport and HTTP errors raise the client's KubeError types."""
    return parse_server_version(await client.get("/version"))

"""What a pod's `/create` carries: the references to fetch first, then the RetrievedPodData. Pure.

The pod sent to the plugin is the apiserver's object with three changes, all kubelet semantics:
each container's `env` is replaced by the fully resolved list (valueFrom/envFrom gone, `$(VAR)`
expanded), `command`/`args` are expanded against it, and downwardAPI volumes become projected ones
(see volumes.py). Everything else is byte-for-byte what the apiserver served.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from plugin_client.models import RetrievedContainer, RetrievedPodData
from vnode.kube.types import Container, Pod
from vnode.node.env import (
    DownwardValues,
    References,
    env_references,
    expand_command,
    resolve_env,
)
from vnode.node.volumes import (
    TokenSource,
    VolumeOptions,
    all_containers,
    container_volumes,
    pod_for_plugin,
    token_sources,
    volume_references,
)

# interLink's per-pod IP override annotation (pkg/virtualkubelet: interlink.eu/pod-ip).
POD_IP_ANNOTATION = "interlink.eu/pod-ip"
# interLink's pod IP when nothing else is known: remote pods have no cluster address.
DEFAULT_POD_IP = "127.0.0.1"


@dataclass(frozen=True)
class Needs:
    """Everything to fetch from the apiserver before a pod can be submitted."""

    configmaps: frozenset[str]
    secrets: frozenset[str]
    tokens: tuple[TokenSource, ...]


@dataclass
class Submission:
    data: RetrievedPodData
    # envFrom keys dropped because they are not valid variable names, per container.
    invalid_env_keys: dict[str, list[str]] = field(default_factory=dict)


def pod_ip(pod: Pod) -> str:
    return pod.get("metadata", {}).get("annotations", {}).get(POD_IP_ANNOTATION) or DEFAULT_POD_IP


def needs(pod: Pod, options: VolumeOptions) -> Needs:
    configmaps, secrets = volume_references(pod, options)
    for container in all_containers(pod):
        cms, secs = env_references(container)
        configmaps |= cms
        secrets |= secs
    return Needs(frozenset(configmaps - {""}), frozenset(secrets - {""}),
                 tuple(token_sources(pod, options)))


def kubernetes_service_env(addr: str, port: str) -> dict[str, str]:
    """KUBERNETES_* variables pointing remote pods at the apiserver (interLink's
    KubernetesApiAddr/KubernetesApiPort); empty unless both are configured."""
    if not addr or not port:
        return {}
    url = f"tcp://{addr}:{port}"
    return {"KUBERNETES_SERVICE_HOST": addr, "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": url,
            "KUBERNETES_PORT_443_TCP": url, "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_ADDR": addr, "KUBERNETES_PORT_443_TCP_PORT": port}


def build(pod: Pod, refs: References, tokens: dict[tuple[str, str], str], down: DownwardValues,
          options: VolumeOptions, *, extra_env: dict[str, str] | None = None,
          skip_env_resolution: bool = False) -> Submission:
    """The RetrievedPodData for `pod`. Raises MissingReference / InvalidPodSpec."""
    out = pod_for_plugin(pod)
    invalid: dict[str, list[str]] = {}
    spec: dict[str, Any] = out.get("spec", {})  # type: ignore[assignment]
    for key in ("initContainers", "containers"):
        resolved: list[Container] = []
        for container in spec.get(key) or []:
            if skip_env_resolution:
                resolved.append(container)
                continue
            env = resolve_env(pod, container, refs, down, extra=extra_env)
            if env.invalid_keys:
                invalid[container.get("name", "")] = env.invalid_keys
            fresh = expand_command(container, env.env)
            fresh.pop("envFrom", None)
            if env.env:
                fresh["env"] = env.env
            else:
                fresh.pop("env", None)
            resolved.append(fresh)
        if key in spec:
            spec[key] = resolved
    per_container = container_volumes(pod, refs, tokens, down, options)
    containers = tuple(
        RetrievedContainer(
            name=c.name,
            config_maps=tuple(copy.deepcopy(dict(x)) for x in c.configmaps) or None,
            projected_volume_maps=tuple(dict(x) for x in c.projected) or None,
            secrets=tuple(copy.deepcopy(dict(x)) for x in c.secrets) or None,
        )
        for c in per_container)
    return Submission(RetrievedPodData(pod=dict(out), containers=containers or None), invalid)

"""Per-container volume data for the plugin: which ConfigMaps, Secrets and projected volumes each
container mounts, in interLink's wire shape. Pure: objects and tokens are fetched beforehand.

For each container (init containers first, then regular ones, in spec order) and each of its
volumeMounts, the pod volume with that name contributes:
* `configMap` → the ConfigMap object (a missing optional one becomes an empty ConfigMap, so the
  plugin still creates the (empty) mount, as the kubelet does);
* `secret` → the Secret object (same rule);
* `projected` → a ConfigMap-shaped object named after the *volume*, whose `data` maps each file's
  path to its content (service-account tokens, ConfigMap/Secret items, downward API values);
* `downwardAPI` → the same projected shape (interLink converts these since #530), and the pod sent
  to the plugin has the volume rewritten to `projected` so the plugin mounts it like the others;
* `emptyDir` → nothing (the plugin creates it), other types are not supported remotely.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from vnode.kube.types import ConfigMap, Container, Pod, Secret, Volume
from vnode.node.env import (
    DownwardValues,
    InvalidPodSpec,
    MissingReference,
    References,
    field_ref_value,
    resource_ref_value,
    secret_text,
)

KUBE_ROOT_CA = "kube-root-ca.crt"
# The kubelet's default for projected token sources without expirationSeconds (API defaulting).
DEFAULT_TOKEN_EXPIRATION = 3600


@dataclass(frozen=True)
class TokenSource:
    """A serviceAccountToken projection: one TokenRequest per (volume, path)."""

    volume: str
    path: str
    audience: str
    expiration_seconds: int


@dataclass
class ContainerVolumes:
    name: str
    configmaps: list[ConfigMap] = field(default_factory=list)
    projected: list[ConfigMap] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)


@dataclass
class VolumeOptions:
    disable_projected: bool = False
    # KubernetesApiCaCrt: replaces the cluster CA in kube-root-ca.crt projections, for pods that
    # reach the apiserver from the remote side through another address.
    root_ca_override: str = ""


def all_containers(pod: Pod) -> list[Container]:
    spec = pod.get("spec", {})
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _volumes_by_name(pod: Pod) -> dict[str, Volume]:
    return {v.get("name", ""): v for v in pod.get("spec", {}).get("volumes") or []}


def volume_references(pod: Pod, options: VolumeOptions) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's mounted volumes need."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    volumes = _volumes_by_name(pod)
    mounted = {m.get("name", "") for c in all_containers(pod) for m in c.get("volumeMounts") or []}
    for name in mounted:
        vol = volumes.get(name)
        if vol is None:
            continue
        if "configMap" in vol:
            configmaps.add(vol["configMap"].get("name", ""))
        elif "secret" in vol:
            secrets.add(vol["secret"].get("secretName", ""))
        elif "projected" in vol and not options.disable_projected:
            for source in vol["projected"].get("sources") or []:
                if "configMap" in source:
                    cm_name = source["configMap"].get("name", "")
                    if not (cm_name == KUBE_ROOT_CA and options.root_ca_override):
                        configmaps.add(cm_name)
                if "secret" in source:
                    secrets.add(source["secret"].get("name", ""))
    return configmaps, secrets


def token_sources(pod: Pod, options: VolumeOptions) -> list[TokenSource]:
    """The service-account token projections of the pod's mounted projected volumes."""
    if options.disable_projected:
        return []
    volumes = _volumes_by_name(pod)
    mounted = {m.get("name", "") for c in all_containers(pod) for m in c.get("volumeMounts") or []}
    out: list[TokenSource] = []
    for name in sorted(mounted):
        vol = volumes.get(name)
        if vol is None or "projected" not in vol:
            continue
        for source in vol["projected"].get("sources") or []:
            sat = source.get("serviceAccountToken")
            if sat is not None:
                out.append(TokenSource(
                    volume=name, path=sat.get("path", "token"),
                    audience=sat.get("audience", ""),
                    expiration_seconds=int(sat.get("expirationSeconds")
                                           or DEFAULT_TOKEN_EXPIRATION)))
    return out


def _empty(kind: str, name: str, namespace: str) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"name": name, "namespace": namespace},
            "data": {}}


def _items(source: dict[str, Any], available: dict[str, str], kind: str, name: str
           ) -> dict[str, str]:
    """Apply a source's `items` (key → path) to its data; no items means every key."""
    items = source.get("items")
    if not items:
        return dict(available)
    out: dict[str, str] = {}
    for item in items:
        key = item.get("key", "")
        if key not in available:
            if source.get("optional"):
                continue
            raise MissingReference(kind, name, key)
        out[item.get("path") or key] = available[key]
    return out


def projected_volume(pod: Pod, volume: Volume, refs: References, tokens: dict[tuple[str, str], str],
                     down: DownwardValues, options: VolumeOptions) -> ConfigMap:
    """A projected (or downwardAPI) volume as interLink's ConfigMap-shaped projection."""
    name = volume.get("name", "")
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    if "downwardAPI" in volume:
        sources: list[dict[str, Any]] = [{"downwardAPI": volume["downwardAPI"]}]
    else:
        sources = list(volume.get("projected", {}).get("sources") or [])
    for source in sources:
        if "serviceAccountToken" in source:
            path = source["serviceAccountToken"].get("path", "token")
            data[path] = tokens[(name, path)]
        elif "configMap" in source:
            src = source["configMap"]
            cm_name = src.get("name", "")
            if cm_name == KUBE_ROOT_CA and options.root_ca_override:
                paths = [i.get("path") or i.get("key") for i in src.get("items") or []] or ["ca.crt"]
                for path in paths:
                    data[str(path)] = options.root_ca_override
                continue
            cm = refs.configmap(cm_name)
            if cm is None:
                if src.get("optional"):
                    continue
                raise MissingReference("ConfigMap", cm_name)
            data.update(_items(src, dict(cm.get("data") or {}), "ConfigMap", cm_name))
        elif "secret" in source:
            src = source["secret"]
            s_name = src.get("name", "")
            secret = refs.secret(s_name)
            if secret is None:
                if src.get("optional"):
                    continue
                raise MissingReference("Secret", s_name)
            raw = dict(secret.get("data") or {})
            for path, encoded in _items(src, raw, "Secret", s_name).items():
                _put_bytes(data, binary, path, encoded)
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                data[item.get("path", "")] = _downward_item(pod, item, down)
        # clusterTrustBundle / podCertificate projections need node credentials; not supported.
    out: dict[str, Any] = {"metadata": {"name": name}, "data": data}
    if binary:
        out["binaryData"] = binary
    return out  # type: ignore[return-value]


def _put_bytes(data: dict[str, str], binary: dict[str, str], path: str, encoded: str) -> None:
    """Secret bytes into the projection: text when it is UTF-8, else binaryData (base64)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
        data[path] = raw.decode("utf-8")
    except UnicodeDecodeError:
        binary[path] = encoded
    except ValueError:
        data[path] = secret_text(encoded)


def _downward_item(pod: Pod, item: dict[str, Any], down: DownwardValues) -> str:
    if "fieldRef" in item:
        return field_ref_value(pod, item["fieldRef"].get("fieldPath", ""), down, volume=True)
    if "resourceFieldRef" in item:
        ref = item["resourceFieldRef"]
        container = ref.get("containerName", "")
        if not container:
            raise InvalidPodSpec(f"downwardAPI item {item.get('path')!r}: resourceFieldRef "
                                 "needs containerName in a volume")
        return resource_ref_value(pod, container, ref.get("resource", ""), ref.get("divisor", ""),
                                  down)
    raise InvalidPodSpec(f"downwardAPI item {item.get('path')!r} has neither fieldRef nor "
                         "resourceFieldRef")


def container_volumes(pod: Pod, refs: References, tokens: dict[tuple[str, str], str],
                      down: DownwardValues, options: VolumeOptions) -> list[ContainerVolumes]:
    """The per-container volume data, init containers first. Raises MissingReference."""
    namespace = pod.get("metadata", {}).get("namespace", "")
    volumes = _volumes_by_name(pod)
    projected_cache: dict[str, ConfigMap] = {}
    result: list[ContainerVolumes] = []
    for container in all_containers(pod):
        entry = ContainerVolumes(container.get("name", ""))
        seen: set[str] = set()
        for mount in container.get("volumeMounts") or []:
            vname = mount.get("name", "")
            vol = volumes.get(vname)
            if vol is None or vname in seen:
                continue
            seen.add(vname)
            if "configMap" in vol:
                src = vol["configMap"]
                cm_name = src.get("name", "")
                cm = refs.configmap(cm_name)
                if cm is None:
                    if not src.get("optional"):
                        raise MissingReference("ConfigMap", cm_name,
                                               context=f"volume {vname}")
                    cm = _empty("ConfigMap", cm_name, namespace)  # type: ignore[assignment]
                else:
                    _check_items(src, dict(cm.get("data") or {}) | dict(cm.get("binaryData") or {}),
                                 "ConfigMap", cm_name)
                entry.configmaps.append(cm)  # type: ignore[arg-type]
            elif "secret" in vol:
                src = vol["secret"]
                s_name = src.get("secretName", "")
                secret = refs.secret(s_name)
                if secret is None:
                    if not src.get("optional"):
                        raise MissingReference("Secret", s_name, context=f"volume {vname}")
                    secret = _empty("Secret", s_name, namespace)  # type: ignore[assignment]
                else:
                    _check_items(src, dict(secret.get("data") or {}), "Secret", s_name)
                entry.secrets.append(secret)  # type: ignore[arg-type]
            elif ("projected" in vol and not options.disable_projected) or "downwardAPI" in vol:
                if vname not in projected_cache:
                    projected_cache[vname] = projected_volume(pod, vol, refs, tokens, down, options)
                entry.projected.append(projected_cache[vname])
        result.append(entry)
    return result


def _check_items(source: dict[str, Any], available: dict[str, Any], kind: str, name: str) -> None:
    if source.get("optional"):
        return
    for item in source.get("items") or []:
        if item.get("key", "") not in available:
            raise MissingReference(kind, name, item.get("key", ""))


# Volume kinds a plugin can provide remotely: the agent sends the data of the first four, the
# plugin makes emptyDirs itself and mounts hostPaths of the remote host (the SLURM plugin supports
# every hostPath type; a plugin that cannot fails the create with its own message).
REMOTE_VOLUME_KINDS = ("configMap", "secret", "projected", "downwardAPI", "emptyDir", "hostPath")


def unsupported_volumes(pod: Pod) -> list[tuple[str, str]]:
    """Mounted volumes (name, kind) no remote backend can get: persistentVolumeClaim, csi, nfs,
    ephemeral, image, ... Their data lives in the cluster; the pod is refused with a message
    rather than run without its data (interLink silently drops them)."""
    volumes = _volumes_by_name(pod)
    mounted = {m.get("name", "") for c in all_containers(pod) for m in c.get("volumeMounts") or []}
    out: list[tuple[str, str]] = []
    for name in sorted(mounted):
        vol = volumes.get(name)
        if vol is None or any(k in vol for k in REMOTE_VOLUME_KINDS):
            continue
        kind = next((k for k in vol if k != "name"), "unknown")
        out.append((name, kind))
    return out


def pod_for_plugin(pod: Pod) -> Pod:
    """A deep copy with downwardAPI volumes rewritten as projected volumes (see module doc)."""
    out: Pod = copy.deepcopy(pod)
    for vol in out.get("spec", {}).get("volumes") or []:
        if "downwardAPI" in vol:
            dapi = vol.pop("downwardAPI")
            projected: dict[str, Any] = {"sources": [{"downwardAPI": {"items": dapi.get("items", [])}}]}
            if "defaultMode" in dapi:
                projected["defaultMode"] = dapi["defaultMode"]
            vol["projected"] = projected
    return out

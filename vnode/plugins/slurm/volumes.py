"""Pod volumes → a plan: the files and directories the pod directory must hold, the checks the job
must run on the compute node, and each container's bind mounts.

Layout inside the pod directory (the Go plugin's): `configMaps/<volume>/`, `secrets/<volume>/`,
`projectedVolumeMaps/<volume>/` (projected, downwardAPI, service-account tokens) and
`emptyDirs/<volume>/`. Unlike the Go plugin, a whole volume directory is bound at its mountPath
(so `items` paths with sub-directories work and the mount shows only the volume's files), subPath
binds exactly that entry, and modes are honoured (configMap 0644, secret and projected 0600
unless defaultMode/mode say otherwise). The plan is applied twice when the data root is not shared
(SHARED_FS unset): by the plugin on its host and by the job itself on the compute node, so mounts
never vanish. hostPath checks (type Directory, File, Socket, ...) and *OrCreate creation run in
the job, on the node that mounts them. Pure.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .podspec import (
    Container,
    Pod,
    PodSpecError,
    Volume,
    check_container_path,
    check_relative_path,
)

CONFIGMAP_MODE = 0o644  # Kubernetes' default
SECRET_MODE = 0o600  # stricter than Kubernetes' 0644: the data root is a shared HPC filesystem
PROJECTED_MODE = 0o600  # may hold tokens and secrets; same reason
DIR_MODE = 0o700  # pod directories hold secrets
EMPTYDIR_MODE = 0o777  # containers may run as any user, as on a kubelet
HOSTPATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice")
_HOSTPATH_CHOICES = ", ".join(t or '""' for t in HOSTPATH_TYPES)
SUPPORTED = ("configMap", "secret", "projected", "downwardAPI", "emptyDir", "hostPath")
SUBDIR = {"configMap": "configMaps", "secret": "secrets", "projected": "projectedVolumeMaps",
          "downwardAPI": "projectedVolumeMaps", "emptyDir": "emptyDirs"}


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the pod directory
    content: bytes
    mode: int


@dataclass(frozen=True)
class HostPathCheck:
    path: str  # absolute, on the compute node
    type: str  # one of HOSTPATH_TYPES
    volume: str


@dataclass(frozen=True)
class Bind:
    source: str  # relative to the pod directory when `in_pod_dir`, else absolute
    target: str
    read_only: bool
    in_pod_dir: bool = True
    sub_path: bool = False  # binds a subPath, which is created as a directory when missing


@dataclass
class VolumePlan:
    dirs: list[str] = field(default_factory=list)  # relative to the pod directory, created 0700
    empty_dirs: list[str] = field(default_factory=list)  # relative, created EMPTYDIR_MODE
    files: list[PlannedFile] = field(default_factory=list)
    host_checks: list[HostPathCheck] = field(default_factory=list)
    binds: dict[str, list[Bind]] = field(default_factory=dict)  # container name → binds, in mount order
    warnings: list[str] = field(default_factory=list)


@dataclass
class VolumeData:
    """The objects the agent resolved and sent with /create (RetrievedPodData.container[*])."""

    configmaps: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # by ConfigMap name
    secrets: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # by Secret name
    projected: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # by *volume* name


def collect_volume_data(containers: Sequence[Mapping[str, Any]]) -> VolumeData:
    """Merge every container's entry: the same ConfigMap mounted twice is one object."""
    data = VolumeData()
    for entry in containers:
        for cm in entry.get("configMaps") or []:
            data.configmaps[_name(cm)] = cm
        for s in entry.get("secrets") or []:
            data.secrets[_name(s)] = s
        for p in entry.get("projectedvolumemaps") or []:
            data.projected[_name(p)] = p
    return data


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _mode(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise PodSpecError(where, f"{value!r} is not a file mode (0-0777)")
    return value


def _decode(encoded: Any, where: str) -> bytes:
    if not isinstance(encoded, str):
        raise PodSpecError(where, "expected base64 text")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PodSpecError(where, "is not valid base64") from None


def _text(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise PodSpecError(where, "expected a string")
    return value.encode("utf-8")


def _configmap_files(cm: Mapping[str, Any], label: str) -> dict[str, bytes]:
    out = {k: _text(v, f"{label}.data[{k}]") for k, v in (cm.get("data") or {}).items()}
    out.update({k: _decode(v, f"{label}.binaryData[{k}]") for k, v in (cm.get("binaryData") or {}).items()})
    return out


def _secret_files(secret: Mapping[str, Any], label: str) -> dict[str, bytes]:
    out = {k: _decode(v, f"{label}.data[{k}]") for k, v in (secret.get("data") or {}).items()}
    out.update({k: _text(v, f"{label}.stringData[{k}]") for k, v in (secret.get("stringData") or {}).items()})
    return out


def _apply_items(vol: Volume, files: dict[str, bytes], default_mode: int) -> list[tuple[str, bytes, int]]:
    """`items` select keys and rename them; without items every key is a file."""
    where = f"spec.volumes[{vol.index}].{vol.kind}"
    items = vol.source.get("items")
    if not items:
        return [(k, v, default_mode) for k, v in files.items()]
    out = []
    for i, item in enumerate(items):
        key = str(item.get("key", ""))
        path = str(item.get("path") or key)
        check_relative_path(path, f"{where}.items[{i}].path")
        if key not in files:
            if vol.source.get("optional"):
                continue
            raise PodSpecError(f"{where}.items[{i}].key", f"key {key!r} is not in the {vol.kind}")
        out.append((path, files[key], _mode(item.get("mode"), f"{where}.items[{i}].mode", default_mode)))
    return out


def _projected_modes(vol: Volume, default_mode: int) -> dict[str, int]:
    """Per-path modes of a projected volume, from its sources' items."""
    modes: dict[str, int] = {}
    for s, source in enumerate(vol.source.get("sources") or []):
        for kind in ("configMap", "secret", "downwardAPI"):
            for i, item in enumerate((source.get(kind) or {}).get("items") or []):
                if "mode" in item:
                    where = f"spec.volumes[{vol.index}].projected.sources[{s}].{kind}.items[{i}].mode"
                    modes[str(item.get("path") or item.get("key", ""))] = _mode(item["mode"], where, default_mode)
    for i, item in enumerate(vol.source.get("items") or []):  # a downwardAPI volume sent as is
        if "mode" in item:
            modes[str(item.get("path", ""))] = _mode(item["mode"], f"spec.volumes[{vol.index}].downwardAPI.items[{i}].mode", default_mode)
    return modes


def _volume_files(vol: Volume, data: VolumeData, plan: VolumePlan) -> list[tuple[str, bytes, int]] | None:
    """The files of a data volume, or None when its data was not sent and may be skipped."""
    where = f"spec.volumes[{vol.index}]"
    src = vol.source
    if vol.kind == "configMap":
        cm_name = str(src.get("name", ""))
        cm = data.configmaps.get(cm_name)
        if cm is None:
            if src.get("optional"):
                return []
            raise PodSpecError(f"{where}.configMap.name", f"ConfigMap {cm_name!r} of volume {vol.name!r} was not sent with the pod")
        mode = _mode(src.get("defaultMode"), f"{where}.configMap.defaultMode", CONFIGMAP_MODE)
        return _apply_items(vol, _configmap_files(cm, f"ConfigMap {cm_name}"), mode)
    if vol.kind == "secret":
        s_name = str(src.get("secretName", ""))
        secret = data.secrets.get(s_name)
        if secret is None:
            if src.get("optional"):
                return []
            raise PodSpecError(f"{where}.secret.secretName", f"Secret {s_name!r} of volume {vol.name!r} was not sent with the pod")
        mode = _mode(src.get("defaultMode"), f"{where}.secret.defaultMode", SECRET_MODE)
        return _apply_items(vol, _secret_files(secret, f"Secret {s_name}"), mode)
    # projected / downwardAPI: the agent sends a ConfigMap-shaped {path: content} named after the volume
    projection = data.projected.get(vol.name)
    if projection is None:
        if vol.name.startswith("kube-api-access-"):
            plan.warnings.append(f"volume {vol.name}: service-account projection not sent (projected volumes disabled on the agent?); not mounted")
            return None
        raise PodSpecError(where, f"the contents of {vol.kind} volume {vol.name!r} were not sent with the pod")
    mode = _mode(src.get("defaultMode"), f"{where}.{vol.kind}.defaultMode", PROJECTED_MODE)
    modes = _projected_modes(vol, mode)
    files = _configmap_files(projection, f"projected volume {vol.name}")
    out = []
    for path, content in files.items():
        check_relative_path(path, f"projected volume {vol.name}: path")
        out.append((path, content, modes.get(path, mode)))
    return out


def plan_volumes(pod: Pod, data: VolumeData, export_pod_data: bool = True) -> VolumePlan:
    """Raises PodSpecError naming an unsupported or malformed volume."""
    plan = VolumePlan()
    prepared: dict[str, bool] = {}  # volume name → mountable
    for c in pod.all_containers:
        binds: list[Bind] = []
        for i, m in enumerate(c.volume_mounts):
            vol = pod.volumes[m.name]
            where = f"{c.where}.volumeMounts[{i}]"
            if vol.kind not in SUPPORTED:
                raise PodSpecError(where, f"volume {vol.name!r} is a {vol.kind} volume, which the SLURM plugin does not support (supported: {', '.join(SUPPORTED)})")
            if vol.name not in prepared:
                prepared[vol.name] = _prepare(vol, data, plan, export_pod_data)
            if not prepared[vol.name]:
                continue
            binds.append(_bind(vol, c, m.mount_path, m.sub_path, m.read_only))
        plan.binds[c.name] = binds
    return plan


def _prepare(vol: Volume, data: VolumeData, plan: VolumePlan, export_pod_data: bool) -> bool:
    if vol.kind == "hostPath":
        path = str(vol.source.get("path", ""))
        check_container_path(path, f"spec.volumes[{vol.index}].hostPath.path")
        htype = str(vol.source.get("type") or "")
        if htype not in HOSTPATH_TYPES:
            raise PodSpecError(f"spec.volumes[{vol.index}].hostPath.type", f"{htype!r} is not one of {_HOSTPATH_CHOICES}")
        plan.host_checks.append(HostPathCheck(path, htype, vol.name))
        return True
    if not export_pod_data:
        plan.warnings.append(f"volume {vol.name}: not mounted because ExportPodData is false")
        return False
    root = f"{SUBDIR[vol.kind]}/{vol.name}"
    if vol.kind == "emptyDir":
        plan.empty_dirs.append(root)
        return True
    files = _volume_files(vol, data, plan)
    if files is None:
        return False
    plan.dirs.append(root)
    for path, content, mode in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            sub = f"{root}/{'/'.join(parts[:depth])}"
            if sub not in plan.dirs:
                plan.dirs.append(sub)
        plan.files.append(PlannedFile(f"{root}/{path}", content, mode))
    return True


def _bind(vol: Volume, c: Container, mount_path: str, sub_path: str, read_only: bool) -> Bind:
    if vol.kind == "hostPath":
        source = str(vol.source["path"]).rstrip("/") or "/"
        if sub_path:
            source = f"{source.rstrip('/')}/{sub_path}"
        return Bind(source, mount_path, read_only, in_pod_dir=False, sub_path=bool(sub_path))
    source = f"{SUBDIR[vol.kind]}/{vol.name}"
    if sub_path:
        source = f"{source}/{sub_path}"
    # Kubernetes mounts configMap/secret/projected volumes read-only whatever the mount says.
    forced_ro = vol.kind in ("configMap", "secret", "projected", "downwardAPI")
    return Bind(source, mount_path, read_only or forced_ro, sub_path=bool(sub_path))

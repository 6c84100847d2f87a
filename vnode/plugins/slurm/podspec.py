"""The typed view of the pod fields the plugin reads, parsed from the pod JSON sent on /create.

Only what the job needs is read; everything is validated here, once, with errors naming the field
(`spec.containers[1].volumeMounts[0].mountPath: ...`). Names that end up in file names (namespace,
uid, container names, volume names) are checked so they can never leave the pod directory. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PodSpecError(ValueError):
    """The pod cannot run as a SLURM job; `field` is the JSON path of the culprit."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    init: bool
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    limits: Mapping[str, Any] = field(default_factory=dict)
    requests: Mapping[str, Any] = field(default_factory=dict)
    volume_mounts: tuple[VolumeMount, ...] = ()
    index: int = 0  # position in its list, for error messages

    @property
    def kind(self) -> str:
        """`init` or `run`: the prefix of the container's files (Go layout)."""
        return "init" if self.init else "run"

    @property
    def where(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}[{self.index}]"


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # configMap, secret, projected, downwardAPI, emptyDir, hostPath, or the unsupported key
    source: Mapping[str, Any]
    index: int = 0


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    uid: str
    annotations: Mapping[str, str]
    init_containers: tuple[Container, ...]
    containers: tuple[Container, ...]
    volumes: Mapping[str, Volume]
    run_as_user: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def all_containers(self) -> tuple[Container, ...]:
        return self.init_containers + self.containers

    def container(self, name: str) -> Container | None:
        return next((c for c in self.all_containers if c.name == name), None)


VOLUME_KINDS = ("configMap", "secret", "projected", "downwardAPI", "emptyDir", "hostPath",
                "persistentVolumeClaim", "nfs", "csi", "ephemeral", "iscsi", "cephfs", "rbd", "image",
                "glusterfs", "fc", "azureFile", "azureDisk", "awsElasticBlockStore", "gcePersistentDisk",
                "gitRepo", "flexVolume", "flocker", "cinder", "vsphereVolume", "quobyte", "portworxVolume",
                "scaleIO", "storageos", "photonPersistentDisk")


def _str(obj: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    v = obj.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise PodSpecError(f"{where}.{key}", f"expected a string, got {type(v).__name__}")
    return v


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise PodSpecError(f"{where}.{key}", "expected a list of strings")
    for i, s in enumerate(v):
        if "\0" in s:
            raise PodSpecError(f"{where}.{key}[{i}]", "NUL bytes cannot be passed to a process")
    return tuple(v)


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = obj.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PodSpecError(f"{where}.{key}", "expected an object")
    return v


def check_container_path(path: str, where: str) -> None:
    """A path inside the container, as a runtime bind destination: absolute, and free of the
    characters singularity's `--bind src:dst:opts,...` syntax cannot carry."""
    if not path.startswith("/"):
        raise PodSpecError(where, f"{path!r} must be an absolute path")
    bad = sorted({c for c in path if c in ":," or ord(c) < 0x20 or c == "\x7f"})
    if bad:
        raise PodSpecError(where, f"{path!r} contains {''.join(bad)!r}, which container bind mounts cannot express")


def check_relative_path(path: str, where: str) -> None:
    """A path below a volume root (subPath, items[].path): relative, no '..', no control chars."""
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or not path or any(ord(c) < 0x20 or c in ":,\x7f" for c in path):
        raise PodSpecError(where, f"{path!r} must be a relative path without '..', ':', ',' or control characters")


def _container(obj: Any, init: bool, index: int) -> Container:
    where = f"spec.{'initContainers' if init else 'containers'}[{index}]"
    if not isinstance(obj, dict):
        raise PodSpecError(where, "expected an object")
    name = _str(obj, "name", where)
    if not DNS_LABEL.match(name) or len(name) > 63:
        raise PodSpecError(f"{where}.name", f"{name!r} is not a DNS label (it names the container's files)")
    image = _str(obj, "image", where)
    if not image or any(ord(c) <= 0x20 or c == "\x7f" for c in image):
        raise PodSpecError(f"{where}.image", f"{image!r} is not an image reference")
    env: list[EnvVar] = []
    raw_env = obj.get("env") or []
    if not isinstance(raw_env, list):
        raise PodSpecError(f"{where}.env", "expected a list")
    for i, e in enumerate(raw_env):
        ewhere = f"{where}.env[{i}]"
        if not isinstance(e, dict):
            raise PodSpecError(ewhere, "expected an object")
        ename = _str(e, "name", ewhere)
        if not ENV_NAME.match(ename):
            raise PodSpecError(f"{ewhere}.name", f"{ename!r} cannot be passed through the container runtime (names must match [A-Za-z_][A-Za-z0-9_]*)")
        value = _str(e, "value", ewhere)
        if "\0" in value:
            raise PodSpecError(f"{ewhere}.value", "NUL bytes cannot be stored in an environment variable")
        env.append(EnvVar(ename, value))
    resources = _mapping(obj, "resources", where)
    mounts: list[VolumeMount] = []
    raw_mounts = obj.get("volumeMounts") or []
    if not isinstance(raw_mounts, list):
        raise PodSpecError(f"{where}.volumeMounts", "expected a list")
    for i, m in enumerate(raw_mounts):
        mwhere = f"{where}.volumeMounts[{i}]"
        if not isinstance(m, dict):
            raise PodSpecError(mwhere, "expected an object")
        mount_path = _str(m, "mountPath", mwhere)
        check_container_path(mount_path, f"{mwhere}.mountPath")
        sub_path = _str(m, "subPath", mwhere)
        if m.get("subPathExpr"):
            raise PodSpecError(f"{mwhere}.subPathExpr", "is not supported by the SLURM plugin")
        if sub_path:
            check_relative_path(sub_path, f"{mwhere}.subPath")
        mounts.append(VolumeMount(_str(m, "name", mwhere), mount_path, sub_path, bool(m.get("readOnly", False))))
    working_dir = _str(obj, "workingDir", where)
    if working_dir:
        check_container_path(working_dir, f"{where}.workingDir")
    return Container(
        name=name, image=image, init=init,
        command=_str_list(obj, "command", where) or None,
        args=_str_list(obj, "args", where),
        working_dir=working_dir, env=tuple(env),
        limits=_mapping(resources, "limits", f"{where}.resources"),
        requests=_mapping(resources, "requests", f"{where}.resources"),
        volume_mounts=tuple(mounts), index=index,
    )


def parse_pod(obj: Any) -> Pod:
    """The pod JSON (a v1.Pod) → Pod. Raises PodSpecError."""
    if not isinstance(obj, dict):
        raise PodSpecError("pod", "expected a v1.Pod object")
    meta = _mapping(obj, "metadata", "pod")
    spec = _mapping(obj, "spec", "pod")
    name = _str(meta, "name", "metadata")
    namespace = _str(meta, "namespace", "metadata") or "default"
    uid = _str(meta, "uid", "metadata")
    if not DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise PodSpecError("metadata.namespace", f"{namespace!r} is not a DNS label")
    if not UID_RE.match(uid):
        raise PodSpecError("metadata.uid", f"{uid!r} is not a pod UID")
    annotations = _mapping(meta, "annotations", "metadata")
    for k, v in annotations.items():
        if not isinstance(v, str):
            raise PodSpecError(f"metadata.annotations[{k}]", "expected a string")
    inits = spec.get("initContainers") or []
    regular = spec.get("containers") or []
    if not isinstance(inits, list) or not isinstance(regular, list):
        raise PodSpecError("spec", "containers and initContainers must be lists")
    init_containers = tuple(_container(c, True, i) for i, c in enumerate(inits))
    containers = tuple(_container(c, False, i) for i, c in enumerate(regular))
    if not containers:
        raise PodSpecError("spec.containers", "a pod needs at least one container")
    seen: set[str] = set()
    for c in init_containers + containers:
        if c.name in seen:
            raise PodSpecError(f"{c.where}.name", f"duplicate container name {c.name!r}")
        seen.add(c.name)
    volumes: dict[str, Volume] = {}
    for i, v in enumerate(spec.get("volumes") or []):
        where = f"spec.volumes[{i}]"
        if not isinstance(v, dict):
            raise PodSpecError(where, "expected an object")
        vname = _str(v, "name", where)
        if not DNS_LABEL.match(vname) or len(vname) > 63:
            raise PodSpecError(f"{where}.name", f"{vname!r} is not a DNS label (it names a directory)")
        kinds = [k for k in v if k != "name"]
        kind = next((k for k in kinds if k in VOLUME_KINDS), kinds[0] if kinds else "emptyDir")
        source = v.get(kind) or {}
        if not isinstance(source, dict):
            raise PodSpecError(f"{where}.{kind}", "expected an object")
        volumes[vname] = Volume(vname, kind, source, i)
    for c in init_containers + containers:
        for i, m in enumerate(c.volume_mounts):
            if m.name not in volumes:
                raise PodSpecError(f"{c.where}.volumeMounts[{i}].name", f"no volume named {m.name!r} in spec.volumes")
    sc = _mapping(spec, "securityContext", "spec")
    run_as = sc.get("runAsUser")
    if run_as is not None and (isinstance(run_as, bool) or not isinstance(run_as, int) or run_as < 0):
        raise PodSpecError("spec.securityContext.runAsUser", f"expected a non-negative integer, got {run_as!r}")
    return Pod(name=name, namespace=namespace, uid=uid, annotations=dict(annotations),
               init_containers=init_containers, containers=containers, volumes=volumes,
               run_as_user=run_as, raw=obj)

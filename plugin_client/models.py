"""Typed models of every JSON object on interLink's plugin wire, with Go-exact encoding.

Each model mirrors one Go struct of interLink (``pkg/interlink/types.go``) or of Kubernetes
(``core/v1.ContainerStatus``): ``to_wire()`` returns a dict with the Go JSON keys in Go struct order,
``from_wire(obj)`` decodes the way Go's ``json.Unmarshal`` does:

- an absent key or ``null`` gives the zero value (``""``, ``0``, ``False``, ``None``);
- keys match exactly first, then case-insensitively (Go does);
- unknown keys are ignored;
- a value of the wrong JSON type raises ``WireFormatError`` naming the field path, e.g.
  ``containers[0].state.terminated.exitCode: expected int``.

Go distinguishes a nil slice (``null``) from an empty one (``[]``); the models keep that difference
as ``None`` versus ``()`` so that decoding and re-encoding reproduces the bytes.

Kubernetes objects (Pod, ConfigMap, Secret, PersistentVolumeClaim) stay plain JSON dicts. Their keys
are written in the order given; objects read from the apiserver are already in Go order.

Times: ``metav1.Time`` fields (container states) are ``datetime | None`` and encode as RFC 3339 UTC
seconds or ``null``; ``LogOpts.since_time`` is a Go ``time.Time``, so ``None`` encodes as
``"0001-01-01T00:00:00Z"`` and a set time keeps its UTC offset and (microsecond) fraction.

Pure and I/O-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Self, TypeVar, cast

from . import gojson
from .errors import WireFormatError

__all__ = [
    "GO_ZERO_TIME",
    "Accelerator",
    "ApptainerOptions",
    "ContainerState",
    "ContainerStateRunning",
    "ContainerStateTerminated",
    "ContainerStateWaiting",
    "ContainerStatus",
    "CreateStruct",
    "ExecRequest",
    "KubeObject",
    "LogOpts",
    "LogStruct",
    "PingResources",
    "PingResponse",
    "PodCreateRequests",
    "PodRef",
    "PodStatus",
    "RetrievedContainer",
    "RetrievedPodData",
    "ScriptBuildConfig",
    "SingularityHubConfig",
    "Taint",
    "VolumesOptions",
    "decode",
    "decode_list",
    "encode",
    "parse_json",
    "pod_ref",
]

KubeObject = dict[str, Any]
"""A Kubernetes object (Pod, ConfigMap, Secret, ...) as its JSON dict."""

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Go writes a zero ``time.Time``."""

# ---------------------------------------------------------------------------------------------
# Decoding helpers: Go's tolerance (absent/null -> zero) with type checks that name the field.


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """The value for a Go field: exact key first, then a case-insensitive match, as Go does."""
    if key in obj:
        return obj[key]
    folded = key.casefold()
    for candidate, value in obj.items():
        if candidate.casefold() == folded:
            return value
    return None


def _expect_object(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WireFormatError(path, f"expected object, got {_json_type(value)}")
    return value


def _str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = _get(obj, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireFormatError(_join(path, key), f"expected string, got {_json_type(value)}")
    return value


def _int(obj: Mapping[str, Any], key: str, path: str, bits: int = 64) -> int:
    value = _get(obj, key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireFormatError(_join(path, key), f"expected int, got {_json_type(value)}")
    limit = 1 << (bits - 1)
    if not -limit <= value < limit:
        raise WireFormatError(_join(path, key), f"int {value} out of range for int{bits}")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = _get(obj, key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise WireFormatError(_join(path, key), f"expected bool, got {_json_type(value)}")
    return value


def _optional_bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise WireFormatError(_join(path, key), f"expected bool, got {_json_type(value)}")
    return value


def _kube_object(value: Any, path: str) -> KubeObject:
    """A Kubernetes object field: an object, or null/absent (Go's zero struct, kept as ``{}``)."""
    return dict(_expect_object(value, path)) if not isinstance(value, dict) else value


def _list(
    obj: Mapping[str, Any], key: str, path: str, item: Any
) -> tuple[Any, ...] | None:
    """A Go slice: null/absent -> None, else each element decoded by ``item(value, path)``."""
    value = _get(obj, key)
    if value is None:
        return None
    field_path = _join(path, key)
    if not isinstance(value, list):
        raise WireFormatError(field_path, f"expected list, got {_json_type(value)}")
    return tuple(item(element, f"{field_path}[{index}]") for index, element in enumerate(value))


def _string_item(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireFormatError(path, f"expected string, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# RFC 3339 as Go's time.Parse(time.RFC3339, ...) accepts it (fraction optional, any length).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})\Z"
)


def _parse_time(value: Any, path: str) -> datetime | None:
    if value is None or value == "":
        # "" is rejected by Go; accepted here as "no time", one bad field should not lose a status.
        return None
    if not isinstance(value, str):
        raise WireFormatError(path, f"expected RFC3339 time string, got {_json_type(value)}")
    match = _RFC3339.match(value)
    if match is None:
        raise WireFormatError(path, f"expected RFC3339 time, got {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone == "Z":
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise WireFormatError(path, f"expected RFC3339 time, bad zone in {value!r}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    micros = int((fraction or "").ljust(6, "0")[:6])  # Python keeps microseconds; Go nanoseconds
    try:
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as error:
        raise WireFormatError(path, f"expected RFC3339 time, {error} in {value!r}") from None
    return parsed


def _time_field(obj: Mapping[str, Any], key: str, path: str) -> datetime | None:
    return _parse_time(_get(obj, key), _join(path, key))


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC: the agent and plugins work in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _format_kube_time(moment: datetime | None) -> str | None:
    """metav1.Time: UTC, whole seconds, or null for the zero time."""
    if moment is None:
        return None
    return _as_utc(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_go_time(moment: datetime | None) -> str:
    """time.Time as RFC3339Nano: zero time for None, trailing fraction zeros trimmed, offset kept."""
    if moment is None:
        return GO_ZERO_TIME
    moment = _as_utc(moment)
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return text + "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def _is_go_zero(moment: datetime | None) -> bool:
    return moment is None or (
        _as_utc(moment).astimezone(UTC).replace(tzinfo=None) == datetime(1, 1, 1)
    )


def _wire_list(items: Sequence[Any] | None, convert: Any = None) -> list[Any] | None:
    if items is None:
        return None
    if convert is None:
        return list(items)
    return [convert(item) for item in items]


# ---------------------------------------------------------------------------------------------
# Kubernetes core/v1 container status (only the shape the plugin wire uses).


@dataclass(frozen=True, slots=True)
class ContainerStateWaiting:
    """``state.waiting``: ``{reason, message}``, both omitted when empty."""

    reason: str = ""
    message: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if self.reason:
            wire["reason"] = self.reason
        if self.message:
            wire["message"] = self.message
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(reason=_str(data, "reason", path), message=_str(data, "message", path))


@dataclass(frozen=True, slots=True)
class ContainerStateRunning:
    """``state.running``: ``{startedAt}`` (``null`` when unknown, as Go writes a zero metav1.Time)."""

    started_at: datetime | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"startedAt": _format_kube_time(self.started_at)}

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(started_at=_time_field(data, "startedAt", path))


@dataclass(frozen=True, slots=True)
class ContainerStateTerminated:
    """``state.terminated``: ``{exitCode, signal?, reason?, message?, startedAt, finishedAt, containerID?}``."""

    exit_code: int = 0
    signal: int = 0
    reason: str = ""
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    container_id: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"exitCode": self.exit_code}
        if self.signal:
            wire["signal"] = self.signal
        if self.reason:
            wire["reason"] = self.reason
        if self.message:
            wire["message"] = self.message
        wire["startedAt"] = _format_kube_time(self.started_at)
        wire["finishedAt"] = _format_kube_time(self.finished_at)
        if self.container_id:
            wire["containerID"] = self.container_id
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            exit_code=_int(data, "exitCode", path, bits=32),
            signal=_int(data, "signal", path, bits=32),
            reason=_str(data, "reason", path),
            message=_str(data, "message", path),
            started_at=_time_field(data, "startedAt", path),
            finished_at=_time_field(data, "finishedAt", path),
            container_id=_str(data, "containerID", path),
        )


@dataclass(frozen=True, slots=True)
class ContainerState:
    """``{waiting?, running?, terminated?}``; at most one is normally set, ``{}`` when none is."""

    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if self.waiting is not None:
            wire["waiting"] = self.waiting.to_wire()
        if self.running is not None:
            wire["running"] = self.running.to_wire()
        if self.terminated is not None:
            wire["terminated"] = self.terminated.to_wire()
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        waiting, running, terminated = (
            _get(data, "waiting"),
            _get(data, "running"),
            _get(data, "terminated"),
        )
        return cls(
            waiting=None
            if waiting is None
            else ContainerStateWaiting.from_wire(waiting, _join(path, "waiting")),
            running=None
            if running is None
            else ContainerStateRunning.from_wire(running, _join(path, "running")),
            terminated=None
            if terminated is None
            else ContainerStateTerminated.from_wire(terminated, _join(path, "terminated")),
        )


_CONTAINER_STATUS_KEYS = (
    "name",
    "state",
    "lastState",
    "ready",
    "restartCount",
    "image",
    "imageID",
    "containerID",
    "started",
)
_CONTAINER_STATUS_FOLDED = frozenset(key.casefold() for key in _CONTAINER_STATUS_KEYS)


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """Kubernetes ``v1.ContainerStatus``.

    The fields the wire uses are typed; any other field (``allocatedResources``, ``resources``,
    ``volumeMounts``, ``user``, ...) is kept in ``extra`` in arrival order and written after
    ``started``, which is where Go's struct puts them.
    """

    name: str
    state: ContainerState = ContainerState()
    last_state: ContainerState = ContainerState()
    ready: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str = ""
    container_id: str = ""
    started: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "state": self.state.to_wire(),
            "lastState": self.last_state.to_wire(),
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
        }
        if self.container_id:
            wire["containerID"] = self.container_id
        if self.started is not None:
            wire["started"] = self.started
        wire.update(self.extra)
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        extra = {k: v for k, v in data.items() if k.casefold() not in _CONTAINER_STATUS_FOLDED}
        return cls(
            name=_str(data, "name", path),
            state=ContainerState.from_wire(_get(data, "state"), _join(path, "state")),
            last_state=ContainerState.from_wire(_get(data, "lastState"), _join(path, "lastState")),
            ready=_bool(data, "ready", path),
            restart_count=_int(data, "restartCount", path, bits=32),
            image=_str(data, "image", path),
            image_id=_str(data, "imageID", path),
            container_id=_str(data, "containerID", path),
            started=_optional_bool(data, "started", path),
            extra=extra,
        )


# ---------------------------------------------------------------------------------------------
# interLink types (pkg/interlink/types.go).


@dataclass(frozen=True, slots=True)
class PodStatus:
    """interLink ``PodStatus``: ``{name, UID, namespace, JID, containers, initContainers}``."""

    name: str = ""
    uid: str = ""
    namespace: str = ""
    jid: str = ""
    containers: tuple[ContainerStatus, ...] | None = None
    init_containers: tuple[ContainerStatus, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "UID": self.uid,
            "namespace": self.namespace,
            "JID": self.jid,
            "containers": _wire_list(self.containers, ContainerStatus.to_wire),
            "initContainers": _wire_list(self.init_containers, ContainerStatus.to_wire),
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            name=_str(data, "name", path),
            uid=_str(data, "UID", path),
            namespace=_str(data, "namespace", path),
            jid=_str(data, "JID", path),
            containers=_list(data, "containers", path, ContainerStatus.from_wire),
            init_containers=_list(data, "initContainers", path, ContainerStatus.from_wire),
        )


@dataclass(frozen=True, slots=True)
class CreateStruct:
    """interLink ``CreateStruct``: the answer to ``/create``, ``{PodUID, PodJID}``."""

    pod_uid: str = ""
    pod_jid: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"PodUID": self.pod_uid, "PodJID": self.pod_jid}

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(pod_uid=_str(data, "PodUID", path), pod_jid=_str(data, "PodJID", path))


def _kube_item(value: Any, path: str) -> KubeObject:
    return _kube_object(value, path)


@dataclass(frozen=True, slots=True)
class RetrievedContainer:
    """interLink ``RetrievedContainer``: the volume data one container mounts.

    Wire keys: ``name, configMaps, projectedvolumemaps`` (sic, no "s"), ``secrets, emptyDirs``
    (deprecated, always empty) ``, persistentVolumeClaims``.
    """

    name: str
    config_maps: tuple[KubeObject, ...] | None = None
    projected_volume_maps: tuple[KubeObject, ...] | None = None
    secrets: tuple[KubeObject, ...] | None = None
    empty_dirs: tuple[str, ...] | None = None
    persistent_volume_claims: tuple[KubeObject, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "configMaps": _wire_list(self.config_maps),
            "projectedvolumemaps": _wire_list(self.projected_volume_maps),
            "secrets": _wire_list(self.secrets),
            "emptyDirs": _wire_list(self.empty_dirs),
            "persistentVolumeClaims": _wire_list(self.persistent_volume_claims),
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            name=_str(data, "name", path),
            config_maps=_list(data, "configMaps", path, _kube_item),
            projected_volume_maps=_list(data, "projectedvolumemaps", path, _kube_item),
            secrets=_list(data, "secrets", path, _kube_item),
            empty_dirs=_list(data, "emptyDirs", path, _string_item),
            persistent_volume_claims=_list(data, "persistentVolumeClaims", path, _kube_item),
        )


@dataclass(frozen=True, slots=True)
class SingularityHubConfig:
    """``jobConfig.SingularityHubProxy``: ``{server, master_token, cache_validity_seconds}``."""

    server: str = ""
    master_token: str = ""
    cache_validity_seconds: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "master_token": self.master_token,
            "cache_validity_seconds": self.cache_validity_seconds,
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            server=_str(data, "server", path),
            master_token=_str(data, "master_token", path),
            cache_validity_seconds=_int(data, "cache_validity_seconds", path),
        )


@dataclass(frozen=True, slots=True)
class ApptainerOptions:
    """``jobConfig.ApptainerOptions`` of interLink's job-script hook."""

    executable: str = ""
    fakeroot: bool = False
    containall: bool = False
    fuse_mode: str = ""
    no_init: bool = False
    no_home: bool = False
    no_privs: bool = False
    nvidia_support: bool = False
    cleanenv: bool = False
    unsquash: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "executable": self.executable,
            "fakeroot": self.fakeroot,
            "containall": self.containall,
            "fuseMode": self.fuse_mode,
            "noInit": self.no_init,
            "noHome": self.no_home,
            "noPrivs": self.no_privs,
            "nvidiaSupport": self.nvidia_support,
            "cleanenv": self.cleanenv,
            "unsquash": self.unsquash,
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            executable=_str(data, "executable", path),
            fakeroot=_bool(data, "fakeroot", path),
            containall=_bool(data, "containall", path),
            fuse_mode=_str(data, "fuseMode", path),
            no_init=_bool(data, "noInit", path),
            no_home=_bool(data, "noHome", path),
            no_privs=_bool(data, "noPrivs", path),
            nvidia_support=_bool(data, "nvidiaSupport", path),
            cleanenv=_bool(data, "cleanenv", path),
            unsquash=_bool(data, "unsquash", path),
        )


@dataclass(frozen=True, slots=True)
class VolumesOptions:
    """``jobConfig.Volumes`` of interLink's job-script hook."""

    scratch_area: str = ""
    apptainer_cachedir: str = ""
    image_dir: str = ""
    additional_directories_in_path: tuple[str, ...] | None = None
    fuse_sleep_seconds: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "scratch_area": self.scratch_area,
            "apptainer_cachedir": self.apptainer_cachedir,
            "image_dir": self.image_dir,
            "additional_directories_in_path": _wire_list(self.additional_directories_in_path),
            "fuse_sleep_seconds": self.fuse_sleep_seconds,
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            scratch_area=_str(data, "scratch_area", path),
            apptainer_cachedir=_str(data, "apptainer_cachedir", path),
            image_dir=_str(data, "image_dir", path),
            additional_directories_in_path=_list(
                data, "additional_directories_in_path", path, _string_item
            ),
            fuse_sleep_seconds=_int(data, "fuse_sleep_seconds", path),
        )


@dataclass(frozen=True, slots=True)
class ScriptBuildConfig:
    """``jobConfig``: ``{SingularityHubProxy, ApptainerOptions, Volumes}``.

    Go always writes it (``omitempty`` has no effect on a struct), all zero unless the interLink API
    has a ``JobScriptBuildConfig``.
    """

    singularity_hub: SingularityHubConfig = SingularityHubConfig()
    apptainer_options: ApptainerOptions = ApptainerOptions()
    volumes: VolumesOptions = VolumesOptions()

    def to_wire(self) -> dict[str, Any]:
        return {
            "SingularityHubProxy": self.singularity_hub.to_wire(),
            "ApptainerOptions": self.apptainer_options.to_wire(),
            "Volumes": self.volumes.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            singularity_hub=SingularityHubConfig.from_wire(
                _get(data, "SingularityHubProxy"), _join(path, "SingularityHubProxy")
            ),
            apptainer_options=ApptainerOptions.from_wire(
                _get(data, "ApptainerOptions"), _join(path, "ApptainerOptions")
            ),
            volumes=VolumesOptions.from_wire(_get(data, "Volumes"), _join(path, "Volumes")),
        )


@dataclass(frozen=True, slots=True)
class RetrievedPodData:
    """interLink ``RetrievedPodData``: the body of a plugin's ``/create``.

    Wire keys: ``pod`` (v1.Pod), ``container`` (one RetrievedContainer per init container, then per
    container, in spec order), ``jobConfig`` (always written), ``jobScript`` (omitted when empty).
    """

    pod: KubeObject
    containers: tuple[RetrievedContainer, ...] | None = None
    job_config: ScriptBuildConfig = ScriptBuildConfig()
    job_script: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "pod": self.pod,
            "container": _wire_list(self.containers, RetrievedContainer.to_wire),
            "jobConfig": self.job_config.to_wire(),
        }
        if self.job_script:
            wire["jobScript"] = self.job_script
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            pod=_kube_object(_get(data, "pod"), _join(path, "pod")),
            containers=_list(data, "container", path, RetrievedContainer.from_wire),
            job_config=ScriptBuildConfig.from_wire(
                _get(data, "jobConfig"), _join(path, "jobConfig")
            ),
            job_script=_str(data, "jobScript", path),
        )

    @property
    def ref(self) -> PodRef:
        return pod_ref(self.pod)


@dataclass(frozen=True, slots=True)
class PodCreateRequests:
    """interLink ``PodCreateRequests``: what interLink's VK POSTs to the interLink API's ``/create``.

    Wire keys: ``pod, configmaps, secrets, persistentvolumes, projectedvolumesmaps`` (sic, with "s"),
    ``jobscriptURL``. Use :meth:`from_pod_data` to build it from per-container data.
    """

    pod: KubeObject
    config_maps: tuple[KubeObject, ...] | None = None
    secrets: tuple[KubeObject, ...] | None = None
    persistent_volumes: tuple[KubeObject, ...] | None = None
    projected_volume_maps: tuple[KubeObject, ...] | None = None
    job_script_url: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "configmaps": _wire_list(self.config_maps),
            "secrets": _wire_list(self.secrets),
            "persistentvolumes": _wire_list(self.persistent_volumes),
            "projectedvolumesmaps": _wire_list(self.projected_volume_maps),
            "jobscriptURL": self.job_script_url,
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            pod=_kube_object(_get(data, "pod"), _join(path, "pod")),
            config_maps=_list(data, "configmaps", path, _kube_item),
            secrets=_list(data, "secrets", path, _kube_item),
            persistent_volumes=_list(data, "persistentvolumes", path, _kube_item),
            projected_volume_maps=_list(data, "projectedvolumesmaps", path, _kube_item),
            job_script_url=_str(data, "jobscriptURL", path),
        )

    @classmethod
    def from_pod_data(cls, data: RetrievedPodData, job_script_url: str = "") -> Self:
        """Flatten per-container volume data into the top-level lists the interLink API expects.

        Objects are deduplicated by ``metadata.name`` (the API matches volumes to containers by
        name), keeping the first occurrence; an empty list is sent as ``null`` like Go's nil slice.
        """
        containers = data.containers or ()
        return cls(
            pod=data.pod,
            config_maps=_dedupe(c.config_maps for c in containers),
            secrets=_dedupe(c.secrets for c in containers),
            persistent_volumes=_dedupe(c.persistent_volume_claims for c in containers),
            projected_volume_maps=_dedupe(c.projected_volume_maps for c in containers),
            job_script_url=job_script_url,
        )


def _dedupe(groups: Iterable[tuple[KubeObject, ...] | None]) -> tuple[KubeObject, ...] | None:
    seen: set[str] = set()
    result: list[KubeObject] = []
    for group in groups:
        for obj in group or ():
            name = str((obj.get("metadata") or {}).get("name", ""))
            if name in seen:
                continue
            seen.add(name)
            result.append(obj)
    return tuple(result) or None


@dataclass(frozen=True, slots=True)
class LogOpts:
    """interLink ``ContainerLogOpts``: ``{Tail, Bytes, Timestamps, Follow, Previous, SinceSeconds, SinceTime}``.

    Note ``Bytes`` (Go field LimitBytes) and ``SinceTime`` written as ``"0001-01-01T00:00:00Z"`` when
    unset.
    """

    tail: int = 0
    limit_bytes: int = 0
    timestamps: bool = False
    follow: bool = False
    previous: bool = False
    since_seconds: int = 0
    since_time: datetime | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "Tail": self.tail,
            "Bytes": self.limit_bytes,
            "Timestamps": self.timestamps,
            "Follow": self.follow,
            "Previous": self.previous,
            "SinceSeconds": self.since_seconds,
            "SinceTime": _format_go_time(self.since_time),
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        since_time = _time_field(data, "SinceTime", path)
        return cls(
            tail=_int(data, "Tail", path),
            limit_bytes=_int(data, "Bytes", path),
            timestamps=_bool(data, "Timestamps", path),
            follow=_bool(data, "Follow", path),
            previous=_bool(data, "Previous", path),
            since_seconds=_int(data, "SinceSeconds", path),
            since_time=None if _is_go_zero(since_time) else since_time,
        )


@dataclass(frozen=True, slots=True)
class LogStruct:
    """interLink ``LogStruct``: the body of ``/getLogs``, ``{Namespace, PodUID, PodName, ContainerName, Opts}``."""

    namespace: str
    pod_uid: str
    pod_name: str
    container_name: str
    opts: LogOpts = LogOpts()

    def to_wire(self) -> dict[str, Any]:
        return {
            "Namespace": self.namespace,
            "PodUID": self.pod_uid,
            "PodName": self.pod_name,
            "ContainerName": self.container_name,
            "Opts": self.opts.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            namespace=_str(data, "Namespace", path),
            pod_uid=_str(data, "PodUID", path),
            pod_name=_str(data, "PodName", path),
            container_name=_str(data, "ContainerName", path),
            opts=LogOpts.from_wire(_get(data, "Opts"), _join(path, "Opts")),
        )


@dataclass(frozen=True, slots=True)
class Accelerator:
    """``resources.accelerators[]``: ``{resourceType, model?, available}`` (available is a quantity)."""

    resource_type: str
    available: str
    model: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"resourceType": self.resource_type}
        if self.model:
            wire["model"] = self.model
        wire["available"] = self.available
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            resource_type=_str(data, "resourceType", path),
            model=_str(data, "model", path),
            available=_str(data, "available", path),
        )


@dataclass(frozen=True, slots=True)
class Taint:
    """``taints[]``: ``{key, value, effect}`` (an unknown effect becomes NoSchedule on the node)."""

    key: str
    value: str = ""
    effect: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "effect": self.effect}

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            key=_str(data, "key", path),
            value=_str(data, "value", path),
            effect=_str(data, "effect", path),
        )


@dataclass(frozen=True, slots=True)
class PingResources:
    """``resources``: ``{cpu?, memory?, pods?, accelerators?}``; only the fields present change the node."""

    cpu: str = ""
    memory: str = ""
    pods: str = ""
    accelerators: tuple[Accelerator, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if self.cpu:
            wire["cpu"] = self.cpu
        if self.memory:
            wire["memory"] = self.memory
        if self.pods:
            wire["pods"] = self.pods
        if self.accelerators is not None:
            wire["accelerators"] = [a.to_wire() for a in self.accelerators]
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        return cls(
            cpu=_str(data, "cpu", path),
            memory=_str(data, "memory", path),
            pods=_str(data, "pods", path),
            accelerators=_list(data, "accelerators", path, Accelerator.from_wire),
        )


@dataclass(frozen=True, slots=True)
class PingResponse:
    """The optional answer to a ping (plugin ``GET /status`` with ``[]``): ``{status, resources?, taints?}``.

    ``taints=None`` means "not reported" (node taints unchanged); ``taints=()`` is written as ``[]``
    and means "no plugin taints" (they replace the node's non-system taints).
    """

    status: str = "ok"
    resources: PingResources | None = None
    taints: tuple[Taint, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"status": self.status}
        if self.resources is not None:
            wire["resources"] = self.resources.to_wire()
        if self.taints is not None:
            wire["taints"] = [t.to_wire() for t in self.taints]
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        resources = _get(data, "resources")
        return cls(
            status=_str(data, "status", path),
            resources=None
            if resources is None
            else PingResources.from_wire(resources, _join(path, "resources")),
            taints=_list(data, "taints", path, Taint.from_wire),
        )


# ---------------------------------------------------------------------------------------------
# vnode's exec extension: the query string of GET /exec (see plugin_client/EXEC.md).

_TRUE_WORDS = frozenset({"1", "true", "True", "TRUE"})
_FALSE_WORDS = frozenset({"", "0", "false", "False", "FALSE"})


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """What to run where: query parameters ``namespace, podUID, podName, container, command``
    (repeated, one per argv element), ``stdin, stdout, stderr, tty`` (``true``/``false``)."""

    namespace: str
    pod_uid: str
    pod_name: str
    container: str
    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False

    def to_query(self) -> list[tuple[str, str]]:
        query = [
            ("namespace", self.namespace),
            ("podUID", self.pod_uid),
            ("podName", self.pod_name),
            ("container", self.container),
        ]
        query.extend(("command", argument) for argument in self.command)
        for key, flag in (
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ):
            query.append((key, "true" if flag else "false"))
        return query

    @classmethod
    def from_query(cls, query: Mapping[str, str] | Iterable[tuple[str, str]]) -> Self:
        """Parse a query; ``query`` is a multidict (``getall``) or (key, value) pairs."""
        pairs = _query_pairs(query)
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)

        def single(key: str, required: bool = True) -> str:
            found = values.get(key, [])
            if len(found) > 1:
                raise WireFormatError(key, "given more than once")
            if required and (not found or not found[0]):
                raise WireFormatError(key, "required query parameter missing")
            return found[0] if found else ""

        def flag(key: str, default: bool) -> bool:
            text = single(key, required=False) if key in values else None
            if text is None:
                return default
            if text in _TRUE_WORDS:
                return True
            if text in _FALSE_WORDS:
                return False
            raise WireFormatError(key, f"expected true or false, got {text!r}")

        command = tuple(values.get("command", ()))
        if not command:
            raise WireFormatError("command", "required query parameter missing")
        request = cls(
            namespace=single("namespace"),
            pod_uid=single("podUID"),
            pod_name=single("podName"),
            container=single("container"),
            command=command,
            stdin=flag("stdin", False),
            stdout=flag("stdout", True),
            stderr=flag("stderr", True),
            tty=flag("tty", False),
        )
        if request.tty and request.stderr:
            # With a terminal, stderr is merged into stdout (kubectl and the kubelet agree).
            request = replace(request, stderr=False)
        return request


def _query_pairs(query: Any) -> list[tuple[str, str]]:
    items = getattr(query, "items", None)
    if items is not None:
        # multidict.items() yields every (key, value) pair, repeated keys included.
        return [(str(k), str(v)) for k, v in items()]
    return [(str(k), str(v)) for k, v in query]


# ---------------------------------------------------------------------------------------------
# A small typed view of a pod, for messages and logs.


@dataclass(frozen=True, slots=True)
class PodRef:
    """namespace/name/uid of a pod dict, for log lines and error messages."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"


def pod_ref(pod: Mapping[str, Any]) -> PodRef:
    """The pod's identity; missing fields become ``""`` (this never raises)."""
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(meta, Mapping):
        meta = {}

    def text(key: str) -> str:
        value = meta.get(key)
        return value if isinstance(value, str) else ""

    return PodRef(namespace=text("namespace"), name=text("name"), uid=text("uid"))


# ---------------------------------------------------------------------------------------------
# Whole documents.


def _to_json(value: Any) -> Any:
    to_wire = getattr(value, "to_wire", None)
    if to_wire is not None:
        return to_wire()
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


def encode(value: Any) -> bytes:
    """JSON bytes as Go writes them, for a model, a list of models, or plain JSON values."""
    return gojson.dumps(_to_json(value))


def parse_json(data: bytes | str) -> Any:
    """Parse a JSON document; malformed JSON raises WireFormatError."""
    try:
        return gojson.loads(data)
    except ValueError as error:
        raise WireFormatError("", f"invalid JSON: {error}") from None


D = TypeVar("D")


def decode(data: bytes | str, model: type[D]) -> D:
    """Decode one JSON document into ``model`` (a class with ``from_wire``)."""
    return cast(D, cast(Any, model).from_wire(parse_json(data)))


def decode_list(data: bytes | str, model: type[D]) -> list[D]:
    """Decode a JSON array (``null`` gives ``[]``, as Go's nil slice) into a list of ``model``."""
    document = parse_json(data)
    if document is None:
        return []
    if not isinstance(document, list):
        raise WireFormatError("", f"expected list, got {_json_type(document)}")
    from_wire = cast(Any, model).from_wire
    return [from_wire(item, f"[{index}]") for index, item in enumerate(document)]

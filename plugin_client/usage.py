"""vnode's usage extension of the plugin API: what ``GET /usage`` answers (see USAGE.md).

A plugin reports, per pod it knows, cumulative CPU time and current memory of each container (and
optionally of the whole pod), with the time the figures were measured. The agent turns these into
the kubelet's ``/metrics/resource`` (what metrics-server scrapes for ``kubectl top``) and
``/stats/summary``. Cumulative counters, not rates, cross the wire: a rate needs two samples and the
consumer (metrics-server, the summary's ``usageNanoCores``) computes it over its own window.

Decoding follows :mod:`.models`: absent or ``null`` is the zero value (``None`` for the optional
figures), unknown keys are ignored, a wrong type or a negative figure raises ``WireFormatError``
naming the field. Pure and I/O-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from .errors import WireFormatError
from .models import _expect_object, _get, _join, _json_type, _list, _str, _time_field

__all__ = ["ContainerUsage", "PodUsage", "format_time"]

# Figures are Go uint64 on the wire; JSON numbers beyond this are a broken plugin.
_MAX_FIGURE = (1 << 64) - 1


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with the microseconds Python keeps (``2026-11-25T21:00:00.123456Z``):
    rates are computed between two timestamps, so whole seconds would not do."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _figure(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    value = _get(obj, key)
    if value is None:
        return None
    where = _join(path, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireFormatError(where, f"expected a non-negative int, got {_json_type(value)}")
    if not 0 <= value <= _MAX_FIGURE:
        raise WireFormatError(where, f"{value} is out of range (0 to 2^64-1)")
    return value


def _put(wire: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        wire[key] = value


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    """One container's figures.

    ``cpu_usage_core_nanoseconds``: CPU time used since the container started (user + system,
    all its processes), never decreasing while it runs. ``memory_working_set_bytes``: memory in use
    now. ``cpu_usage_nano_cores``: optional instantaneous rate (the plugin's own, if it has one).
    ``timestamp``: when these figures were measured (None: the pod's timestamp).
    """

    name: str
    cpu_usage_core_nanoseconds: int
    memory_working_set_bytes: int
    start_time: datetime | None = None
    timestamp: datetime | None = None
    cpu_usage_nano_cores: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name}
        _put(wire, "startTime", format_time(self.start_time) if self.start_time else None)
        _put(wire, "timestamp", format_time(self.timestamp) if self.timestamp else None)
        wire["cpuUsageCoreNanoSeconds"] = self.cpu_usage_core_nanoseconds
        _put(wire, "cpuUsageNanoCores", self.cpu_usage_nano_cores)
        wire["memoryWorkingSetBytes"] = self.memory_working_set_bytes
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        name = _str(data, "name", path)
        if not name:
            raise WireFormatError(_join(path, "name"), "a container needs a name")
        return cls(
            name=name,
            cpu_usage_core_nanoseconds=_figure(data, "cpuUsageCoreNanoSeconds", path) or 0,
            memory_working_set_bytes=_figure(data, "memoryWorkingSetBytes", path) or 0,
            start_time=_time_field(data, "startTime", path),
            timestamp=_time_field(data, "timestamp", path),
            cpu_usage_nano_cores=_figure(data, "cpuUsageNanoCores", path),
        )


@dataclass(frozen=True, slots=True)
class PodUsage:
    """One pod's figures: ``{UID, name, namespace, timestamp, containers, [pod totals]}``.

    The pod totals (``cpu_usage_core_nanoseconds``, ``memory_working_set_bytes``) are optional: a
    plugin that measures the pod as a whole (a SLURM job) sends them, and they include what runs
    outside the containers (the job script). ``None`` means "the sum of the containers".
    """

    uid: str
    name: str
    namespace: str
    timestamp: datetime | None = None
    containers: tuple[ContainerUsage, ...] = ()
    cpu_usage_core_nanoseconds: int | None = None
    memory_working_set_bytes: int | None = None

    @property
    def cpu_total(self) -> int:
        """The pod's cumulative CPU in core-nanoseconds (its own figure, else the containers' sum)."""
        if self.cpu_usage_core_nanoseconds is not None:
            return self.cpu_usage_core_nanoseconds
        return sum(c.cpu_usage_core_nanoseconds for c in self.containers)

    @property
    def memory_total(self) -> int:
        """The pod's working set in bytes (its own figure, else the containers' sum)."""
        if self.memory_working_set_bytes is not None:
            return self.memory_working_set_bytes
        return sum(c.memory_working_set_bytes for c in self.containers)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"UID": self.uid, "name": self.name, "namespace": self.namespace}
        _put(wire, "timestamp", format_time(self.timestamp) if self.timestamp else None)
        _put(wire, "cpuUsageCoreNanoSeconds", self.cpu_usage_core_nanoseconds)
        _put(wire, "memoryWorkingSetBytes", self.memory_working_set_bytes)
        wire["containers"] = [c.to_wire() for c in self.containers]
        return wire

    @classmethod
    def from_wire(cls, obj: Any, path: str = "") -> Self:
        data = _expect_object(obj, path)
        uid = _str(data, "UID", path)
        if not uid:
            raise WireFormatError(_join(path, "UID"), "a pod's usage needs its UID")
        containers = _list(data, "containers", path, ContainerUsage.from_wire) or ()
        names = [c.name for c in containers]
        if len(set(names)) != len(names):
            raise WireFormatError(_join(path, "containers"), "a container name appears twice")
        return cls(
            uid=uid,
            name=_str(data, "name", path),
            namespace=_str(data, "namespace", path),
            timestamp=_time_field(data, "timestamp", path),
            containers=tuple(containers),
            cpu_usage_core_nanoseconds=_figure(data, "cpuUsageCoreNanoSeconds", path),
            memory_working_set_bytes=_figure(data, "memoryWorkingSetBytes", path),
        )

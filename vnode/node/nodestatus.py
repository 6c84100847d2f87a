"""The virtual Node object: labels, taints, capacity, conditions, and the patches that keep the
apiserver's copy right. Pure.

Ownership on the Node: vnode sets its labels but never removes labels others added; it owns every
taint except the system ones other controllers manage (`node.kubernetes.io/*`, e.g. the KCM's
not-ready/unreachable taints); it owns the status conditions it reports, capacity/allocatable,
addresses, daemon endpoints, nodeInfo and declaredFeatures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from plugin_client.models import PingResponse
from vnode.kube.quantity import QuantityError, is_non_negative_integer, parse_quantity
from vnode.kube.version import ServerVersion
from vnode.settings import (
    ACCELERATOR_MODEL_LABELS,
    NO_SCHEDULE_TAINT_KEY,
    TAINT_EFFECTS,
    Settings,
    accelerator_capacity,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Taints with these prefixes belong to Kubernetes controllers (node lifecycle, cloud provider).
SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
NO_SCHEDULE_TAINT = {"key": NO_SCHEDULE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
CONDITION_TYPES = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable",
                   "InterlinkConnectivity")
# The feature a node declares so a 1.36+ apiserver passes exec's WebSocket through (KEP-4006);
# the declared name is the feature gate's name.
WEBSOCKET_FEATURE = "ExtendWebSocketsToKubelet"
# Node.status.declaredFeatures is beta (on) from 1.36; 1.35 has it alpha (off) and drops it, so
# declaring there would make every check see a difference and patch.
DECLARED_FEATURES_SINCE = ServerVersion(1, 36)


@dataclass(frozen=True)
class PluginHealth:
    """The last ping's outcome."""

    reachable: bool
    endpoint: str
    error: str = ""
    ping: PingResponse | None = None

    @classmethod
    def unknown(cls, endpoint: str) -> PluginHealth:
        return cls(False, endpoint, "not contacted yet")


def debounced_health(reported: PluginHealth, observed: PluginHealth, failures: int,
                     threshold: int) -> tuple[PluginHealth, int]:
    """The health to report after one ping, and the new count of consecutive failed pings.

    A reachable plugin turns NotReady only after `threshold` failed pings in a row: under load a
    single ping can time out while the plugin is fine, and flapping Ready makes the
    controller-manager taint the node and mark every pod NotReady. A plugin that is not reachable
    yet (or any more) stays so until one ping succeeds; a success counts at once.
    """
    if observed.reachable:
        return observed, 0
    failures += 1
    if reported.reachable and failures < threshold:
        return reported, failures  # keep Ready (and the last answer's capacity) for now
    return observed, failures


def node_labels(settings: Settings) -> dict[str, str]:
    """interLink's labels, then accelerator models, then the configured ones."""
    name = settings.node.name
    labels = {
        "type": "virtual-kubelet",
        "virtual-node.interlink/type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "alpha.service-controller.kubernetes.io/exclude-balancer": "true",
    }
    for acc in settings.node.accelerators:
        label = ACCELERATOR_MODEL_LABELS.get(acc.resource_type)
        if label and acc.model:
            labels[label] = acc.model
    labels.update(settings.node.labels)
    return labels


def _taint(key: str, value: str, effect: str) -> Obj:
    taint: Obj = {"key": key, "effect": effect if effect in TAINT_EFFECTS else "NoSchedule"}
    if value:
        taint["value"] = value
    return taint


def managed_taints(settings: Settings, ping: PingResponse | None) -> list[Obj]:
    """The taints vnode owns: the no-schedule taint, then the plugin's (when its ping reports
    taints, even none, they replace the configured ones, as in interLink), else the config's."""
    taints = [dict(NO_SCHEDULE_TAINT)]
    if ping is not None and ping.taints is not None:
        extra = [_taint(t.key, t.value, t.effect) for t in ping.taints
                 if t.key and t.key != NO_SCHEDULE_TAINT_KEY and not is_system_taint(t.key)]
    else:
        extra = [t.to_k8s() for t in settings.node.taints]
    seen = {(t["key"], t["effect"]) for t in taints}
    for taint in extra:
        if (taint["key"], taint["effect"]) not in seen:  # the apiserver rejects duplicates
            seen.add((taint["key"], taint["effect"]))
            taints.append(taint)
    return taints


def is_system_taint(key: str) -> bool:
    return key.startswith(SYSTEM_TAINT_PREFIXES)


def merged_taints(existing: Sequence[Mapping[str, Any]], managed: Sequence[Obj]) -> list[Obj]:
    """System taints already on the node (kept, with their timeAdded) plus ours."""
    keep = [dict(t) for t in existing if is_system_taint(str(t.get("key", "")))]
    return keep + [dict(t) for t in managed]


def _taint_set(taints: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", ""))) for t in taints}


def capacity(settings: Settings, ping: PingResponse | None) -> dict[str, str]:
    """Capacity (= allocatable) from config, overridden by the fields a ping reports."""
    node = settings.node
    cap: dict[str, str] = {"cpu": node.cpu, "memory": node.memory, "pods": node.pods}
    cap.update(accelerator_capacity(node.accelerators))
    resources = ping.resources if ping is not None else None
    if resources is None:
        return cap
    for key, value, integer in (("cpu", resources.cpu, False), ("memory", resources.memory, False),
                                ("pods", resources.pods, True)):
        if value and _valid_quantity(value, integer):
            cap[key] = value
        elif value:
            log.warning("plugin ping reported invalid %s %r; keeping %s", key, value, cap[key])
    totals: dict[str, Fraction] = {}
    for acc in resources.accelerators or ():
        if not acc.resource_type or not _valid_quantity(acc.available, True):
            log.warning("plugin ping reported invalid accelerator %r", acc)
            continue
        totals[acc.resource_type] = totals.get(acc.resource_type, Fraction(0)) + \
            parse_quantity(acc.available)
    for rtype, total in totals.items():
        cap[rtype] = str(int(total))
    return cap


def _valid_quantity(value: str, integer: bool) -> bool:
    try:
        amount = parse_quantity(value)
    except QuantityError:
        return False
    return amount >= 0 and (not integer or is_non_negative_integer(value))


def _cond(ctype: str, ok: bool, reason: str, message: str, now: str,
          old: Mapping[str, Mapping[str, Any]]) -> Obj:
    status = "True" if ok else "False"
    previous = old.get(ctype) or {}
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since or now}


def conditions(health: PluginHealth, now: str, old: Sequence[Mapping[str, Any]]) -> list[Obj]:
    by_type = {str(c.get("type")): c for c in old}
    if health.reachable:
        ready = _cond("Ready", True, "KubeletReady",
                      f"vnode is ready; plugin {health.endpoint} answers", now, by_type)
        link = _cond("InterlinkConnectivity", True, "InterlinkPingSuccessful",
                     f"plugin {health.endpoint} answered the last ping", now, by_type)
    else:
        message = f"plugin {health.endpoint} is unreachable: {health.error}"
        ready = _cond("Ready", False, "PluginUnreachable", message, now, by_type)
        link = _cond("InterlinkConnectivity", False, "InterlinkPingFailed", message, now, by_type)
    return [
        ready,
        _cond("MemoryPressure", False, "KubeletHasSufficientMemory",
              "virtual node: memory is the backend's", now, by_type),
        _cond("DiskPressure", False, "KubeletHasNoDiskPressure",
              "virtual node: disk is the backend's", now, by_type),
        _cond("PIDPressure", False, "KubeletHasSufficientPID",
              "virtual node: processes are the backend's", now, by_type),
        # Always False: interLink's "NetworkUnavailable follows Ready" left nodes tainted
        # network-unavailable (interLink #518).
        _cond("NetworkUnavailable", False, "VirtualNodeNetwork",
              "virtual node: pod networking is the backend's", now, by_type),
        link,
    ]


def declared_features(settings: Settings, server: ServerVersion | None) -> list[str]:
    """What the Node lists in status.declaredFeatures: sorted and unique, as the apiserver
    requires. The agent owns the whole list. ExtendWebSocketsToKubelet needs a kubelet endpoint,
    the setting, and an apiserver (1.36+) that keeps the field."""
    features: set[str] = set()
    kubelet = settings.kubelet
    if (kubelet.enabled and kubelet.declare_websocket and server is not None
            and server >= DECLARED_FEATURES_SINCE):
        features.add(WEBSOCKET_FEATURE)
    return sorted(features)


def desired_status(settings: Settings, health: PluginHealth, now: str, version: str,
                   current: Mapping[str, Any] | None = None,
                   features: Sequence[str] = ()) -> Obj:
    """`features`: declaredFeatures (from `declared_features`); none leaves the field out."""
    current = current or {}
    cap = capacity(settings, health.ping)
    status: Obj = {
        "capacity": dict(cap),
        "allocatable": dict(cap),
        "conditions": conditions(health, now, current.get("conditions") or []),
        "addresses": [{"type": "InternalIP", "address": settings.node.internal_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.kubelet.port}},
        "nodeInfo": node_info(version),
    }
    if features:
        status["declaredFeatures"] = sorted(set(features))
    return status


def node_info(version: str) -> dict[str, str]:
    return {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "", "containerRuntimeVersion": f"vnode://{version}",
            "kubeletVersion": f"v{version}-vnode", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64"}


def new_node(settings: Settings, health: PluginHealth, now: str, version: str,
             features: Sequence[str] = ()) -> Obj:
    """The Node to create when none exists."""
    spec: Obj = {"taints": managed_taints(settings, health.ping)}
    if settings.node.pod_cidr:
        spec["podCIDR"] = settings.node.pod_cidr
        spec["podCIDRs"] = [settings.node.pod_cidr]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": settings.node.name, "labels": node_labels(settings)},
        "spec": spec,
        "status": desired_status(settings, health, now, version, features=features),
    }


def meta_patch(node: Mapping[str, Any], settings: Settings, ping: PingResponse | None
               ) -> Obj | None:
    """A merge patch adding our labels and setting our taints, conditional on the node's
    resourceVersion (so a concurrent taint change by the KCM is never overwritten); None if the
    node already has them."""
    meta = node.get("metadata", {})
    labels = meta.get("labels") or {}
    want_labels = {k: v for k, v in node_labels(settings).items() if labels.get(k) != v}
    existing = node.get("spec", {}).get("taints") or []
    mine = managed_taints(settings, ping)
    current_mine = [t for t in existing if not is_system_taint(str(t.get("key", "")))]
    patch: Obj = {}
    if want_labels:
        patch.setdefault("metadata", {})["labels"] = want_labels
    if _taint_set(current_mine) != _taint_set(mine):
        patch["spec"] = {"taints": merged_taints(existing, mine)}
    if not patch:
        return None
    patch.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion", "")
    return patch


def _material(cond: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (str(cond.get("type")), str(cond.get("status")), str(cond.get("reason", "")),
            str(cond.get("message", "")))


def _same_quantity(have: Any, want: Any) -> bool:
    """Equal as quantities: the apiserver stores capacity in canonical form ("16384Mi" comes back
    as "16Gi", "1000" as "1k"), so comparing strings would patch the Node on every ping."""
    if have == want:
        return True
    if have is None or want is None:
        return False
    try:
        return parse_quantity(have) == parse_quantity(want)
    except QuantityError:
        return False


def status_patch(node: Mapping[str, Any], desired: Mapping[str, Any], *, heartbeat: bool
                 ) -> Obj | None:
    """SMP for nodes/status, or None when nothing material changed and no heartbeat is due.

    Material: a condition's status/reason/message, capacity, addresses, endpoints, nodeInfo,
    declaredFeatures. Heartbeat times alone are written only when `heartbeat` is set (at least
    every 60 s).
    """
    current = node.get("status", {})
    patch: Obj = {}
    for key in ("capacity", "allocatable"):
        have: Mapping[str, Any] = current.get(key) or {}
        want: Mapping[str, Any] = desired[key]
        diff = {k: v for k, v in want.items() if not _same_quantity(have.get(k), v)}
        diff.update({k: None for k in have if k not in want})
        if diff:
            patch[key] = diff
    for key in ("daemonEndpoints", "nodeInfo"):
        have = current.get(key) or {}
        if any(have.get(k) != v for k, v in desired[key].items()):
            patch[key] = desired[key]
    have_addrs = [(a.get("type"), a.get("address")) for a in current.get("addresses") or []]
    want_addrs = [(a["type"], a["address"]) for a in desired["addresses"]]
    if have_addrs != want_addrs:
        patch["addresses"] = [{"type": t, "address": a} for t, a in want_addrs]
        stale = {t for t, a in have_addrs if (t, a) not in want_addrs and t not in dict(want_addrs)}
        patch["addresses"] += [{"type": t, "$patch": "delete"} for t in sorted(stale)]
    have_features = list(current.get("declaredFeatures") or [])
    want_features = list(desired.get("declaredFeatures") or [])
    if have_features != want_features:
        # An atomic list: the patch replaces it whole; null removes it (the setting turned off).
        patch["declaredFeatures"] = want_features or None
    have_conds = {str(c.get("type")): c for c in current.get("conditions") or []}
    changed = any(_material(have_conds.get(c["type"], {})) != _material(c)
                  for c in desired["conditions"])
    if changed or heartbeat:
        patch["conditions"] = desired["conditions"]
    if not patch:
        return None
    return {"status": patch}

"""Pod status: what the apiserver should show for a pod, and the patch that gets it there. Pure.

The phase follows the kubelet's `getPhase`, applied to the container states the plugin reports:
* an init container that failed fails the pod (remote jobs are not restarted);
* while init containers run, the pod is Pending and app containers wait in `PodInitializing`;
* any app container still waiting → Pending; any running → Running;
* all app containers terminated → Succeeded if every exit code is 0, else Failed. Unlike the
  kubelet this holds for every restartPolicy: the remote job is over and nothing will restart it.
A plugin that reports no container at all leaves the pod as it is (interLink would mark it
Succeeded). Terminal phases never change again.

Conditions PodScheduled, Initialized, ContainersReady and Ready are computed like the kubelet's
(including readiness gates), and keep their lastTransitionTime while their status is unchanged.

Writes are strategic-merge patches of `pods/status` carrying `metadata.uid` as a precondition,
as the kubelet sends them: conditions merge by type (so conditions others own survive), container
status lists are replaced whole, and nothing is sent when nothing changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plugin_client.models import ContainerStatus as RemoteContainer
from plugin_client.models import PodStatus as RemotePodStatus
from vnode.kube.types import Container, ContainerStatus, Pod, PodCondition, PodStatus

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)
PROVIDER_FAILED = "ProviderFailed"
# The kubelet's condition types, in the order it lists them.
OWNED_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")
# Status keys vnode writes; anything else in pod.status belongs to someone else.
OWNED_SCALARS = ("phase", "reason", "message", "startTime", "hostIP", "podIP")


def now_rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StatusContext:
    now: str
    host_ip: str
    pod_ip: str


def is_terminal(pod: Pod) -> bool:
    return pod.get("status", {}).get("phase") in TERMINAL_PHASES


# -- container statuses ------------------------------------------------------------------------


def _waiting(container: Container, reason: str, message: str = "") -> ContainerStatus:
    detail: dict[str, Any] = {"reason": reason}
    if message:
        detail["message"] = message
    return {"name": container.get("name", ""), "state": {"waiting": detail},  # type: ignore[typeddict-item]
            "lastState": {}, "ready": False, "restartCount": 0,
            "image": container.get("image", ""), "imageID": "", "started": False}


def _from_remote(container: Container, remote: RemoteContainer, previous: ContainerStatus | None,
                 now: str) -> ContainerStatus:
    wire: dict[str, Any] = remote.to_wire()
    wire["name"] = container.get("name", "")
    state = wire.get("state") or {}
    terminated = state.get("terminated")
    before: dict[str, Any] = dict((previous or {}).get("state") or {})
    if terminated is not None:
        if not terminated.get("reason"):
            # The kubelet's reasons: Completed for exit 0, Error otherwise.
            terminated["reason"] = "Completed" if terminated.get("exitCode", 0) == 0 else "Error"
        # Plugins that report no times still get stable ones: first seen, then kept.
        old = before.get("terminated") or {}
        terminated["finishedAt"] = terminated.get("finishedAt") or old.get("finishedAt") or now
        terminated["startedAt"] = (terminated.get("startedAt") or old.get("startedAt")
                                   or (before.get("running") or {}).get("startedAt")
                                   or terminated["finishedAt"])
    elif "running" in state:
        started = state["running"].get("startedAt") or \
            (before.get("running") or {}).get("startedAt") or now
        state["running"] = {"startedAt": started}
    running = "running" in state and terminated is None
    if not state:
        wire["state"] = {"waiting": {"reason": "ContainerCreating"}}
    wire["ready"] = running
    wire["started"] = running or terminated is not None
    wire["image"] = wire.get("image") or container.get("image", "")
    wire.setdefault("imageID", "")
    return wire  # type: ignore[return-value]


def _state_kind(status: ContainerStatus) -> str:
    state = status.get("state", {})
    if "terminated" in state:
        return "terminated"
    if "running" in state:
        return "running"
    return "waiting"


def _exit_code(status: ContainerStatus) -> int:
    return int(status.get("state", {}).get("terminated", {}).get("exitCode", 0) or 0)


# -- conditions --------------------------------------------------------------------------------


def _condition(ctype: str, ok: bool, now: str, old: Mapping[str, PodCondition], *,
               reason: str = "", message: str = "") -> PodCondition:
    status = "True" if ok else "False"
    previous = old.get(ctype)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    cond: PodCondition = {"type": ctype, "status": status, "lastTransitionTime": since or now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _conditions(pod: Pod, phase: str, init_statuses: Sequence[ContainerStatus],
                app_statuses: Sequence[ContainerStatus], now: str) -> list[PodCondition]:
    old = {c.get("type", ""): c for c in pod.get("status", {}).get("conditions") or []}
    terminal = phase in TERMINAL_PHASES
    pending_init = [s.get("name", "") for s in init_statuses
                    if not (_state_kind(s) == "terminated" and _exit_code(s) == 0)]
    if terminal and phase == SUCCEEDED:
        pending_init = []
    unready = [s.get("name", "") for s in app_statuses if not s.get("ready")]
    conds: list[PodCondition] = [_condition("PodScheduled", True, now, old)]
    if pending_init:
        conds.append(_condition("Initialized", False, now, old, reason="ContainersNotInitialized",
                                message=f"containers with incomplete status: [{' '.join(pending_init)}]"))
    else:
        conds.append(_condition("Initialized", True, now, old))
    if terminal:
        conds.append(_condition("ContainersReady", False, now, old, reason="PodCompleted"))
        conds.append(_condition("Ready", False, now, old, reason="PodCompleted"))
        return conds
    if unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        conds.append(_condition("ContainersReady", False, now, old, reason="ContainersNotReady",
                                message=message))
        conds.append(_condition("Ready", False, now, old, reason="ContainersNotReady",
                                message=message))
        return conds
    conds.append(_condition("ContainersReady", True, now, old))
    gates = [g.get("conditionType", "") for g in pod.get("spec", {}).get("readinessGates") or []]  # type: ignore[attr-defined]
    unmet = [g for g in gates if old.get(g, {}).get("status") != "True"]
    if unmet:
        conds.append(_condition("Ready", False, now, old, reason="ReadinessGatesNotReady",
                                message=f"corresponding condition of pod readiness gate "
                                        f"\"{unmet[0]}\" does not exist."))
    else:
        conds.append(_condition("Ready", True, now, old))
    return conds


# -- whole statuses ----------------------------------------------------------------------------


def _base(pod: Pod, ctx: StatusContext) -> PodStatus:
    current = pod.get("status", {})
    status: PodStatus = {"startTime": current.get("startTime") or ctx.now}
    if ctx.host_ip:
        status["hostIP"] = ctx.host_ip
        status["hostIPs"] = [{"ip": ctx.host_ip}]
    if ctx.pod_ip:
        status["podIP"] = ctx.pod_ip
        status["podIPs"] = [{"ip": ctx.pod_ip}]
    return status


def _containers(pod: Pod) -> tuple[list[Container], list[Container]]:
    spec = pod.get("spec", {})
    return list(spec.get("initContainers") or []), list(spec.get("containers") or [])


def pending_status(pod: Pod, ctx: StatusContext, *, reason: str = "ContainerCreating",
                   message: str = "") -> PodStatus:
    """Pending with every container waiting (before/while the job is submitted)."""
    inits, apps = _containers(pod)
    init_st = [_waiting(c, "PodInitializing") for c in inits]
    app_st = [_waiting(c, reason if not inits else "PodInitializing", message) for c in apps]
    status = _base(pod, ctx)
    status["phase"] = PENDING
    status["conditions"] = _conditions(pod, PENDING, init_st, app_st, ctx.now)
    if init_st:
        status["initContainerStatuses"] = init_st
    status["containerStatuses"] = app_st
    return status


def failed_status(pod: Pod, ctx: StatusContext, *, reason: str, message: str) -> PodStatus:
    """Failed by vnode (e.g. the plugin refused the pod): every container terminated, exit 1."""
    inits, apps = _containers(pod)

    def terminated(c: Container) -> ContainerStatus:
        return {"name": c.get("name", ""), "lastState": {}, "ready": False, "restartCount": 0,
                "image": c.get("image", ""), "imageID": "", "started": False,
                "state": {"terminated": {"exitCode": 1, "reason": reason, "message": message,
                                         "startedAt": None, "finishedAt": ctx.now}}}  # type: ignore[typeddict-item]

    init_st = [terminated(c) for c in inits]
    app_st = [terminated(c) for c in apps]
    status = _base(pod, ctx)
    status["phase"] = FAILED
    status["reason"] = reason
    status["message"] = message
    status["conditions"] = _conditions(pod, FAILED, init_st, app_st, ctx.now)
    if init_st:
        status["initContainerStatuses"] = init_st
    status["containerStatuses"] = app_st
    return status


def remote_status(pod: Pod, remote: RemotePodStatus, ctx: StatusContext) -> PodStatus | None:
    """The status the plugin's report implies, or None when the report says nothing usable."""
    if not remote.containers and not remote.init_containers:
        return None
    inits, apps = _containers(pod)
    by_name_init = {c.name: c for c in remote.init_containers or ()}
    by_name_app = {c.name: c for c in remote.containers or ()}
    current = pod.get("status", {})
    prev_init = {s.get("name"): s for s in current.get("initContainerStatuses") or []}
    prev_app = {s.get("name"): s for s in current.get("containerStatuses") or []}
    init_st = [_from_remote(c, by_name_init[c.get("name", "")], prev_init.get(c.get("name")), ctx.now)
               if c.get("name") in by_name_init else _waiting(c, "PodInitializing") for c in inits]

    init_failed = next((s for s in init_st
                        if _state_kind(s) == "terminated" and _exit_code(s) != 0), None)
    init_done = all(_state_kind(s) == "terminated" and _exit_code(s) == 0 for s in init_st)
    app_st = []
    for c in apps:
        name = c.get("name", "")
        reported = _from_remote(c, by_name_app[name], prev_app.get(name), ctx.now) \
            if name in by_name_app else None
        if reported is not None and (init_done or _state_kind(reported) != "waiting"):
            app_st.append(reported)
        else:
            app_st.append(_waiting(c, "ContainerCreating" if init_done else "PodInitializing"))

    kinds = [_state_kind(s) for s in app_st]
    if init_failed is not None:
        phase = FAILED
    elif not init_done or "waiting" in kinds:
        phase = PENDING
    elif "running" in kinds:
        phase = RUNNING
    elif all(_exit_code(s) == 0 for s in app_st):
        phase = SUCCEEDED
    else:
        phase = FAILED
    if phase in TERMINAL_PHASES:
        for s in app_st + init_st:
            s["ready"] = False
    status = _base(pod, ctx)
    status["phase"] = phase
    status["conditions"] = _conditions(pod, phase, init_st, app_st, ctx.now)
    if init_st:
        status["initContainerStatuses"] = init_st
    status["containerStatuses"] = app_st
    return status


# -- patches -----------------------------------------------------------------------------------


def _condition_diff(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
                    ) -> list[dict[str, Any]]:
    """SMP diff of conditions (merged by type): for each of our conditions, the fields that
    differ, plus null for a reason/message that no longer applies. Conditions we do not
    compute are left alone."""
    old_by = {o.get("type"): o for o in old}
    out: list[dict[str, Any]] = []
    for cond in new:
        previous = old_by.get(cond.get("type")) or {}
        diff = {k: v for k, v in cond.items() if previous.get(k) != v}
        for key in ("reason", "message"):
            if key not in cond and previous.get(key):
                diff[key] = None
        if diff:
            diff["type"] = cond.get("type")
            out.append(diff)
    return out


def _ip_list_diff(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    """SMP diff of hostIPs/podIPs (merged by ip): new entries, and deletes for stale ones."""
    old_ips = [o.get("ip") for o in old]
    new_ips = [n.get("ip") for n in new]
    if old_ips == new_ips:
        return []
    out: list[dict[str, Any]] = [{"ip": ip} for ip in new_ips if ip not in old_ips]
    out.extend({"ip": ip, "$patch": "delete"} for ip in old_ips if ip not in new_ips)
    return out


def status_patch(pod: Pod, desired: PodStatus) -> dict[str, Any] | None:
    """The strategic-merge patch for pods/status, or None if the pod already shows `desired`.

    Only the keys vnode owns are compared; a terminal phase in the pod is never overwritten.
    """
    current: Mapping[str, Any] = pod.get("status", {})
    if current.get("phase") in TERMINAL_PHASES and desired.get("phase") != current.get("phase"):
        return None
    patch: dict[str, Any] = {}
    for key in OWNED_SCALARS:
        if key in desired:
            if current.get(key) != desired.get(key):
                patch[key] = desired.get(key)
        elif key in ("reason", "message") and current.get(key):
            patch[key] = None
    for key in ("containerStatuses", "initContainerStatuses"):
        if key in desired and _comparable(current.get(key)) != _comparable(desired.get(key)):
            patch[key] = desired.get(key)
    conds = _condition_diff(current.get("conditions") or [], desired.get("conditions") or [])
    if conds:
        patch["conditions"] = conds
    for key in ("hostIPs", "podIPs"):
        if key in desired:
            diff = _ip_list_diff(current.get(key) or [], desired.get(key) or [])  # type: ignore[arg-type]
            if diff:
                patch[key] = diff
    if not patch:
        return None
    return {"metadata": {"uid": pod.get("metadata", {}).get("uid", "")}, "status": patch}


def _comparable(statuses: Any) -> Any:
    """Container statuses as the apiserver stores them: no null times, no empty lastState."""
    if not statuses:
        return []
    return [_drop_nulls(s) for s in statuses]


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None and v != {}
                or k in ("state",)}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def apply_status_patch(pod: Pod, patch: Mapping[str, Any]) -> Pod:
    """What the pod looks like after `patch` (for tests and the local echo cache)."""
    out: Pod = copy.deepcopy(pod)
    status: dict[str, Any] = dict(out.get("status", {}))
    for key, value in patch.get("status", {}).items():
        if key == "conditions":
            merged = {c.get("type"): dict(c) for c in status.get("conditions") or []}
            for c in value:
                base = merged.setdefault(c["type"], {})
                for k, v in c.items():
                    if v is None:
                        base.pop(k, None)
                    else:
                        base[k] = v
            status["conditions"] = list(merged.values())
        elif key in ("hostIPs", "podIPs"):
            ips = [e for e in status.get(key) or []]
            for e in value:
                if e.get("$patch") == "delete":
                    ips = [i for i in ips if i.get("ip") != e.get("ip")]
                elif all(i.get("ip") != e.get("ip") for i in ips):
                    ips.append({"ip": e["ip"]})
            status[key] = ips
        elif value is None:
            status.pop(key, None)
        else:
            status[key] = copy.deepcopy(value)
    out["status"] = status  # type: ignore[typeddict-item]
    return out

"""Pod status from plugin reports: phase like the kubelet's getPhase, conditions, and patches
that are sent only when something changed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from plugin_client.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    PodStatus,
)
from vnode.node.podstatus import (
    StatusContext,
    apply_status_patch,
    failed_status,
    pending_status,
    remote_status,
    status_patch,
)

CTX = StatusContext(now="2026-01-01T00:00:00Z", host_ip="10.0.0.5", pod_ip="127.0.0.1")
LATER = StatusContext(now="2026-01-01T00:05:00Z", host_ip="10.0.0.5", pod_ip="127.0.0.1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(containers: tuple[str, ...] = ("main",), init: tuple[str, ...] = (),
        phase: str = "Pending", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [{"name": n, "image": f"img-{n}"} for n in containers],
                     **({"initContainers": [{"name": n, "image": "i"} for n in init]} if init else {}),
                     **spec},
            "status": {"phase": phase, "conditions": [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": "2025-12-31T23:59:00Z"}]}}


def running() -> ContainerState:
    return ContainerState(running=ContainerStateRunning(started_at=T0))


def waiting(reason: str = "Pending") -> ContainerState:
    return ContainerState(waiting=ContainerStateWaiting(reason=reason))


def done(code: int) -> ContainerState:
    return ContainerState(terminated=ContainerStateTerminated(exit_code=code, started_at=T0,
                                                              finished_at=T0))


def report(containers: dict[str, ContainerState], init: dict[str, ContainerState] | None = None
           ) -> PodStatus:
    return PodStatus(name="p", uid="u-1", namespace="ns", jid="42",
                     containers=tuple(ContainerStatus(name=n, state=s) for n, s in containers.items()),
                     init_containers=None if init is None else tuple(
                         ContainerStatus(name=n, state=s) for n, s in init.items()))


def phase_of(p: dict[str, Any], r: PodStatus) -> str:
    status = remote_status(p, r, CTX)
    assert status is not None
    return str(status["phase"])


@pytest.mark.parametrize(("states", "phase"), [
    ({"a": running(), "b": running()}, "Running"),
    ({"a": running(), "b": waiting()}, "Pending"),       # kubelet: any waiting → Pending
    ({"a": running(), "b": done(0)}, "Running"),
    ({"a": done(0), "b": done(0)}, "Succeeded"),
    ({"a": done(0), "b": done(2)}, "Failed"),
    ({"a": waiting(), "b": waiting()}, "Pending"),
])
def test_phase_follows_the_kubelets_rules(states: dict[str, ContainerState], phase: str) -> None:
    assert phase_of(pod(("a", "b")), report(states)) == phase


def test_exit_codes_and_reasons_reach_the_container_status() -> None:
    status = remote_status(pod(("a", "b")), report({"a": done(0), "b": done(3)}), CTX)
    assert status is not None
    terminated = {c["name"]: c["state"]["terminated"] for c in status["containerStatuses"]}
    assert terminated["a"]["exitCode"] == 0 and terminated["a"]["reason"] == "Completed"
    assert terminated["b"]["exitCode"] == 3 and terminated["b"]["reason"] == "Error"


def test_terminal_phase_holds_for_every_restart_policy() -> None:
    assert phase_of(pod(restartPolicy="Always"), report({"main": done(0)})) == "Succeeded"
    assert phase_of(pod(restartPolicy="OnFailure"), report({"main": done(1)})) == "Failed"


def test_a_report_without_containers_leaves_the_pod_alone() -> None:
    # interLink turns an empty report into Succeeded; an empty answer says nothing.
    assert remote_status(pod(), report({}), CTX) is None
    assert remote_status(pod(), PodStatus(name="p", uid="u-1"), CTX) is None


def test_containers_the_plugin_does_not_report_wait_in_container_creating() -> None:
    status = remote_status(pod(("a", "b")), report({"a": running()}), CTX)
    assert status is not None
    states = {c["name"]: c["state"] for c in status["containerStatuses"]}
    assert states["b"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["phase"] == "Pending"


def test_running_init_containers_keep_the_pod_pending_and_app_containers_initializing() -> None:
    status = remote_status(pod(("main",), init=("setup",)),
                           report({"main": waiting()}, init={"setup": running()}), CTX)
    assert status is not None
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    initialized = next(c for c in status["conditions"] if c["type"] == "Initialized")
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"


def test_a_failed_init_container_fails_the_pod() -> None:
    assert phase_of(pod(("main",), init=("setup",)),
                    report({"main": waiting()}, init={"setup": done(1)})) == "Failed"


def test_finished_init_containers_let_the_app_run() -> None:
    status = remote_status(pod(("main",), init=("setup",)),
                           report({"main": running()}, init={"setup": done(0)}), CTX)
    assert status is not None
    assert status["phase"] == "Running"
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
                     "Ready": "True"}


def test_ready_waits_for_readiness_gates() -> None:
    p = pod(readinessGates=[{"conditionType": "example.com/gate"}])
    status = remote_status(p, report({"main": running()}), CTX)
    assert status is not None
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReadinessGatesNotReady"
    p["status"]["conditions"].append({"type": "example.com/gate", "status": "True"})
    status = remote_status(p, report({"main": running()}), CTX)
    assert status is not None
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_terminal_pods_are_not_ready() -> None:
    status = remote_status(pod(), report({"main": done(0)}), CTX)
    assert status is not None
    conds = {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}
    assert conds["Ready"] == ("False", "PodCompleted")
    assert all(not c["ready"] for c in status["containerStatuses"])


def test_failed_status_marks_every_container_terminated_with_the_reason() -> None:
    status = failed_status(pod(("a",), init=("i",)), CTX, reason="ProviderFailed",
                           message="partition gpu does not exist")
    assert status["phase"] == "Failed"
    assert status["reason"] == "ProviderFailed"
    assert status["message"] == "partition gpu does not exist"
    for c in status["containerStatuses"] + status["initContainerStatuses"]:
        assert c["state"]["terminated"]["reason"] == "ProviderFailed"
        assert c["state"]["terminated"]["exitCode"] == 1


def test_pending_status_carries_the_waiting_reason_and_message() -> None:
    status = pending_status(pod(), CTX, reason="CreateContainerConfigError",
                            message='configmap "x" not found')
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'configmap "x" not found'}}
    assert status["hostIP"] == "10.0.0.5" and status["podIPs"] == [{"ip": "127.0.0.1"}]


# -- patches -----------------------------------------------------------------------------------

def test_patch_carries_the_uid_precondition() -> None:
    patch = status_patch(pod(), pending_status(pod(), CTX))
    assert patch is not None
    assert patch["metadata"] == {"uid": "u-1"}


def test_no_patch_when_the_pod_already_shows_the_status() -> None:
    p = pod()
    patch = status_patch(p, pending_status(p, CTX))
    assert patch is not None
    p2 = apply_status_patch(p, patch)
    assert status_patch(p2, pending_status(p2, LATER)) is None


def test_unchanged_conditions_keep_their_transition_time() -> None:
    p = pod()
    p = apply_status_patch(p, status_patch(p, pending_status(p, CTX)) or {})
    running_status = remote_status(p, report({"main": running()}), LATER)
    assert running_status is not None
    conds = {c["type"]: c for c in running_status["conditions"]}
    assert conds["PodScheduled"]["lastTransitionTime"] == "2025-12-31T23:59:00Z"
    assert conds["Initialized"]["lastTransitionTime"] == CTX.now
    assert conds["Ready"]["lastTransitionTime"] == LATER.now  # False → True


def test_condition_patch_nulls_a_reason_that_no_longer_applies_and_keeps_foreign_conditions() -> None:
    p = pod()
    p["status"]["conditions"].append({"type": "DisruptionTarget", "status": "False"})
    p = apply_status_patch(p, status_patch(p, pending_status(p, CTX)) or {})
    patch = status_patch(p, remote_status(p, report({"main": running()}), LATER) or {})
    assert patch is not None
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] is None and ready["status"] == "True"
    after = apply_status_patch(p, patch)
    assert any(c["type"] == "DisruptionTarget" for c in after["status"]["conditions"])
    assert "reason" not in next(c for c in after["status"]["conditions"] if c["type"] == "Ready")


def test_a_terminal_phase_is_never_overwritten() -> None:
    p = pod(phase="Succeeded")
    assert status_patch(p, remote_status(p, report({"main": running()}), CTX) or {}) is None


def test_running_start_time_is_stable_when_the_plugin_reports_none() -> None:
    p = pod()
    no_time = report({"main": ContainerState(running=ContainerStateRunning())})
    first = remote_status(p, no_time, CTX)
    assert first is not None
    p = apply_status_patch(p, status_patch(p, first) or {})
    assert p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == CTX.now
    again = remote_status(p, no_time, LATER)
    assert again is not None
    assert status_patch(p, again) is None


def test_status_cycle_through_a_whole_lifecycle_patches_once_per_change() -> None:
    p = pod()
    patches = 0
    for ctx, r in [(CTX, report({"main": waiting()})), (CTX, report({"main": waiting()})),
                   (LATER, report({"main": running()})), (LATER, report({"main": running()})),
                   (LATER, report({"main": done(0)})), (LATER, report({"main": done(0)}))]:
        desired = remote_status(p, r, ctx)
        assert desired is not None
        patch = status_patch(p, desired)
        if patch is not None:
            patches += 1
            p = apply_status_patch(p, patch)
    assert patches == 3
    assert p["status"]["phase"] == "Succeeded"


def test_patch_does_not_modify_its_inputs() -> None:
    p = pod()
    before = copy.deepcopy(p)
    desired = pending_status(p, CTX)
    frozen = copy.deepcopy(desired)
    status_patch(p, desired)
    assert p == before and desired == frozen

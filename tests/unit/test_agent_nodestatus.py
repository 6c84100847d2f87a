"""The virtual Node: interLink's labels and taints, capacity from config and pings, Ready from
plugin health, and status patches only on change or heartbeat."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from plugin_client.models import Accelerator, PingResources, PingResponse, Taint
from vnode.kube.version import ServerVersion
from vnode.node import nodestatus
from vnode.node.node_controller import NodeController
from vnode.node.nodestatus import PluginHealth
from vnode.settings import ConfigError, Settings, settings_from_mapping

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:00:30Z"


def settings(**extra: Any) -> Settings:
    return settings_from_mapping({"InterlinkURL": "unix:///run/p.sock", **extra}, nodename="vn-1",
                                 env={"POD_IP": "10.0.0.5"})


UP = PluginHealth(True, "unix:///run/p.sock")
DOWN = PluginHealth(False, "unix:///run/p.sock", error="connection refused")


def test_new_node_has_interlinks_labels_taint_address_and_endpoint() -> None:
    s = settings(NodeLabels=["site=hpc"], Resources={"Accelerators": [
        {"ResourceType": "nvidia.com/gpu", "Model": "a100", "Available": "4"}]})
    node = nodestatus.new_node(s, UP, NOW, "0.1.0")
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet"
    assert labels["virtual-node.interlink/type"] == "virtual-kubelet"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/hostname"] == "vn-1"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["nvidia-gpu-type"] == "a100"
    assert labels["site"] == "hpc"
    assert node["spec"]["taints"] == [{"key": "virtual-node.interlink/no-schedule", "value": "true",
                                       "effect": "NoSchedule"}]
    status = node["status"]
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"}]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["capacity"] == status["allocatable"] == {
        "cpu": "100", "memory": "3000G", "pods": "10000", "nvidia.com/gpu": "4"}
    assert status["nodeInfo"]["kubeletVersion"] == "v0.1.0-vnode"


def test_ready_follows_plugin_health_and_names_the_plugin_and_error() -> None:
    up = {c["type"]: c for c in nodestatus.conditions(UP, NOW, [])}
    assert up["Ready"]["status"] == "True" and up["Ready"]["reason"] == "KubeletReady"
    down = {c["type"]: c for c in nodestatus.conditions(DOWN, LATER, list(up.values()))}
    assert down["Ready"]["status"] == "False"
    assert "unix:///run/p.sock" in down["Ready"]["message"]
    assert "connection refused" in down["Ready"]["message"]
    assert down["Ready"]["lastTransitionTime"] == LATER
    assert down["InterlinkConnectivity"]["status"] == "False"


def test_ready_survives_fewer_failed_pings_in_a_row_than_the_threshold() -> None:
    reported, failures = UP, 0
    for expected in (1, 2):
        reported, failures = nodestatus.debounced_health(reported, DOWN, failures, 3)
        assert reported is UP and failures == expected
    reported, failures = nodestatus.debounced_health(reported, DOWN, failures, 3)
    assert reported is DOWN and failures == 3


def test_one_answered_ping_resets_the_failure_count_and_is_ready_at_once() -> None:
    reported, failures = nodestatus.debounced_health(UP, DOWN, 0, 3)
    reported, failures = nodestatus.debounced_health(reported, DOWN, failures, 3)
    fresh = PluginHealth(True, "unix:///run/p.sock")
    reported, failures = nodestatus.debounced_health(reported, fresh, failures, 3)
    assert reported is fresh and failures == 0
    reported, failures = nodestatus.debounced_health(DOWN, fresh, 7, 3)
    assert reported is fresh and failures == 0


def test_a_plugin_never_reached_is_not_ready_from_the_first_failed_ping() -> None:
    unknown = PluginHealth.unknown("unix:///run/p.sock")
    reported, failures = nodestatus.debounced_health(unknown, DOWN, 0, 3)
    assert reported is DOWN and failures == 1


def test_a_threshold_of_one_turns_not_ready_at_the_first_failure() -> None:
    assert nodestatus.debounced_health(UP, DOWN, 0, 1) == (DOWN, 1)


def test_ping_timeout_and_failure_threshold_are_settings_independent_of_the_period() -> None:
    s = settings(PingPeriodSeconds=1)
    assert (s.node.ping_timeout, s.node.ping_failure_threshold) == (10.0, 3)
    s = settings(PingPeriodSeconds=1, PingTimeoutSeconds=4, PingFailureThreshold=5)
    assert (s.node.ping_timeout, s.node.ping_failure_threshold) == (4.0, 5)
    from vnode.app import plugin_client_config
    assert plugin_client_config(s).timeouts.ping == 4.0


def test_pressure_and_network_conditions_are_always_false() -> None:
    for health in (UP, DOWN):
        conds = {c["type"]: c["status"] for c in nodestatus.conditions(health, NOW, [])}
        for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"):
            assert conds[ctype] == "False"


def test_configured_taints_follow_the_no_schedule_taint() -> None:
    s = settings(NodeTaints=[{"Key": "gpu", "Value": "yes", "Effect": "NoExecute"}])
    assert nodestatus.managed_taints(s, None) == [
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"},
        {"key": "gpu", "value": "yes", "effect": "NoExecute"}]


def test_ping_taints_replace_configured_ones_but_never_the_no_schedule_taint() -> None:
    s = settings(NodeTaints=[{"Key": "gpu", "Value": "yes", "Effect": "NoExecute"}])
    ping = PingResponse(taints=(Taint("maintenance", "true", "Sometimes"),
                                Taint("virtual-node.interlink/no-schedule", "false", "NoExecute")))
    assert nodestatus.managed_taints(s, ping) == [
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"},
        {"key": "maintenance", "value": "true", "effect": "NoSchedule"}]  # unknown effect
    assert nodestatus.managed_taints(s, PingResponse(taints=())) == [
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]


def test_ping_without_taints_keeps_configured_ones() -> None:
    s = settings(NodeTaints=[{"Key": "gpu", "Effect": "NoSchedule"}])
    assert len(nodestatus.managed_taints(s, PingResponse(taints=None))) == 2


def test_ping_resources_override_capacity_and_bad_values_are_ignored() -> None:
    ping = PingResponse(resources=PingResources(
        cpu="64", memory="not-a-quantity", pods="2.5",
        accelerators=(Accelerator("nvidia.com/gpu", "8"), Accelerator("amd.com/gpu", "x"))))
    cap = nodestatus.capacity(settings(), ping)
    assert cap == {"cpu": "64", "memory": "3000G", "pods": "10000", "nvidia.com/gpu": "8"}


def test_system_taints_of_other_controllers_are_kept_when_ours_change() -> None:
    s = settings()
    node = {"metadata": {"labels": nodestatus.node_labels(s), "resourceVersion": "7"},
            "spec": {"taints": [
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "t"},
                {"key": "old-plugin-taint", "effect": "NoSchedule"},
                {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]}}
    patch = nodestatus.meta_patch(node, s, None)
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["spec"]["taints"] == [
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "t"},
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]


def test_no_meta_patch_when_labels_and_taints_are_in_place() -> None:
    s = settings()
    node = {"metadata": {"labels": {**nodestatus.node_labels(s), "extra": "kept"}},
            "spec": {"taints": nodestatus.managed_taints(s, None)}}
    assert nodestatus.meta_patch(node, s, None) is None


def test_meta_patch_adds_missing_labels_without_removing_others() -> None:
    s = settings(NodeLabels=["new=1"])
    node = {"metadata": {"labels": {"someone-else": "x", "type": "virtual-kubelet"}},
            "spec": {"taints": nodestatus.managed_taints(s, None)}}
    patch = nodestatus.meta_patch(node, s, None)
    assert patch is not None
    assert patch["metadata"]["labels"]["new"] == "1"
    assert "someone-else" not in patch["metadata"]["labels"]
    assert "type" not in patch["metadata"]["labels"]


def node_with(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "vn-1"}, "status": status}


def test_status_is_written_on_change_and_on_heartbeat_only() -> None:
    s = settings()
    first = nodestatus.desired_status(s, UP, NOW, "0.1.0")
    node = node_with(first)
    same_later = nodestatus.desired_status(s, UP, LATER, "0.1.0", node["status"])
    assert nodestatus.status_patch(node, same_later, heartbeat=False) is None
    beat = nodestatus.status_patch(node, same_later, heartbeat=True)
    assert beat is not None and beat["status"]["conditions"][0]["lastHeartbeatTime"] == LATER
    flipped = nodestatus.desired_status(s, DOWN, LATER, "0.1.0", node["status"])
    change = nodestatus.status_patch(node, flipped, heartbeat=False)
    assert change is not None
    ready = next(c for c in change["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_capacity_change_removes_vanished_resources() -> None:
    s = settings()
    node = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0"))
    node["status"]["capacity"]["example.com/fpga"] = "2"
    desired = nodestatus.desired_status(s, UP, NOW, "0.1.0", node["status"])
    patch = nodestatus.status_patch(node, desired, heartbeat=False)
    assert patch is not None
    assert patch["status"]["capacity"] == {"example.com/fpga": None}


def test_capacity_the_apiserver_stored_in_canonical_form_is_not_rewritten() -> None:
    # The SLURM plugin's ping reports memory in Mi and pods as a plain number; the apiserver
    # answers "16Gi" and "1k". Comparing strings patched the Node on every ping.
    s = settings()
    ping = PingResponse.from_wire({"resources": {"cpu": "8", "memory": "16384Mi", "pods": "1000"}})
    desired = nodestatus.desired_status(s, PluginHealth(True, "unix:///p.sock", ping=ping), NOW, "0.1.0")
    assert desired["capacity"]["memory"] == "16384Mi" and desired["capacity"]["pods"] == "1000"
    stored = {**desired, "capacity": {**desired["capacity"], "memory": "16Gi", "pods": "1k"},
              "allocatable": {**desired["allocatable"], "memory": "16Gi", "pods": "1k"}}
    node = node_with(stored)
    again = nodestatus.desired_status(s, PluginHealth(True, "unix:///p.sock", ping=ping), NOW, "0.1.0", node["status"])
    assert nodestatus.status_patch(node, again, heartbeat=False) is None
    bigger = PingResponse.from_wire({"resources": {"cpu": "8", "memory": "32Gi", "pods": "1000"}})
    grown = nodestatus.desired_status(s, PluginHealth(True, "unix:///p.sock", ping=bigger), NOW, "0.1.0", node["status"])
    patch = nodestatus.status_patch(node, grown, heartbeat=False)
    assert patch is not None and patch["status"]["capacity"] == {"memory": "32Gi"}


def test_a_changed_address_replaces_the_old_one() -> None:
    s = settings()
    node = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0"))
    node["status"]["addresses"] = [{"type": "InternalIP", "address": "10.9.9.9"},
                                   {"type": "Hostname", "address": "vn-1"}]
    patch = nodestatus.status_patch(node, nodestatus.desired_status(s, UP, NOW, "0.1.0", node["status"]),
                                    heartbeat=False)
    assert patch is not None
    assert patch["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"},
                                            {"type": "Hostname", "$patch": "delete"}]


# ---- status.declaredFeatures: ExtendWebSocketsToKubelet on 1.36+ ---------------------------------

V135, V136 = ServerVersion(1, 35), ServerVersion(1, 36)
WS = [nodestatus.WEBSOCKET_FEATURE]


def test_the_websocket_feature_is_declared_from_136_on_only() -> None:
    s = settings()
    assert nodestatus.declared_features(s, V136) == ["ExtendWebSocketsToKubelet"]
    assert nodestatus.declared_features(s, ServerVersion(1, 37)) == WS
    assert nodestatus.declared_features(s, ServerVersion(2, 0)) == WS
    assert nodestatus.declared_features(s, V135) == []
    assert nodestatus.declared_features(s, ServerVersion(1, 30)) == []
    assert nodestatus.declared_features(s, None) == []  # version unknown: declare nothing


def test_the_setting_or_a_disabled_kubelet_endpoint_declares_nothing() -> None:
    assert settings().kubelet.declare_websocket is True
    assert nodestatus.declared_features(settings(KubeletDeclareWebSocket=False), V136) == []
    assert nodestatus.declared_features(settings(KubeletDeclareWebSocket="false"), V136) == []
    assert nodestatus.declared_features(settings(KubeletEnabled=False), V136) == []


def test_a_bad_declare_websocket_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="KubeletDeclareWebSocket"):
        settings(KubeletDeclareWebSocket="maybe")


def test_declared_features_are_sorted_and_unique_in_the_status() -> None:
    status = nodestatus.desired_status(settings(), UP, NOW, "0.1.0", features=["b", "a", "b"])
    assert status["declaredFeatures"] == ["a", "b"]
    assert "declaredFeatures" not in nodestatus.desired_status(settings(), UP, NOW, "0.1.0")


def test_a_new_node_on_136_declares_the_websocket_feature() -> None:
    s = settings()
    node = nodestatus.new_node(s, UP, NOW, "0.1.0", nodestatus.declared_features(s, V136))
    assert node["status"]["declaredFeatures"] == ["ExtendWebSocketsToKubelet"]
    old = nodestatus.new_node(s, UP, NOW, "0.1.0", nodestatus.declared_features(s, V135))
    assert "declaredFeatures" not in old["status"]


def test_a_stored_node_with_the_same_declared_features_gets_no_patch() -> None:
    s = settings()
    node = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0", features=WS))
    again = nodestatus.desired_status(s, UP, LATER, "0.1.0", node["status"], WS)
    assert nodestatus.status_patch(node, again, heartbeat=False) is None
    beat = nodestatus.status_patch(node, again, heartbeat=True)
    assert beat is not None and "declaredFeatures" not in beat["status"]


def test_on_135_nothing_is_declared_so_the_stored_node_gets_no_patch() -> None:
    s = settings()
    features = nodestatus.declared_features(s, V135)
    stored = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0", features=features))
    assert "declaredFeatures" not in stored["status"]
    again = nodestatus.desired_status(s, UP, LATER, "0.1.0", stored["status"], features)
    assert nodestatus.status_patch(stored, again, heartbeat=False) is None


def test_an_adopted_node_without_the_feature_is_patched_with_the_whole_list() -> None:
    s = settings()
    node = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0"))
    node["status"]["declaredFeatures"] = ["SomeoneElses"]
    desired = nodestatus.desired_status(s, UP, NOW, "0.1.0", node["status"], WS)
    assert nodestatus.status_patch(node, desired, heartbeat=False) == {
        "status": {"declaredFeatures": ["ExtendWebSocketsToKubelet"]}}


def test_turning_the_setting_off_removes_a_previously_declared_feature() -> None:
    s = settings(KubeletDeclareWebSocket=False)
    node = node_with(nodestatus.desired_status(s, UP, NOW, "0.1.0", features=WS))
    desired = nodestatus.desired_status(s, UP, NOW, "0.1.0", node["status"],
                                        nodestatus.declared_features(s, V136))
    assert nodestatus.status_patch(node, desired, heartbeat=False) == {
        "status": {"declaredFeatures": None}}


class StoredNodes:
    """A NodeApi stand-in that stores what it is sent, optionally dropping declaredFeatures
    (what an apiserver with NodeDeclaredFeatures off does)."""

    def __init__(self, *, keeps_features: bool) -> None:
        self.node: dict[str, Any] | None = None
        self.keeps_features = keeps_features
        self.status_patches: list[dict[str, Any]] = []

    def _store(self, node: dict[str, Any]) -> dict[str, Any]:
        if not self.keeps_features:
            node["status"].pop("declaredFeatures", None)
        self.node = copy.deepcopy(node)
        return copy.deepcopy(node)

    async def get(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.node)

    async def create(self, node: dict[str, Any]) -> dict[str, Any]:
        node = copy.deepcopy(node)
        node["metadata"].update(uid="u-1", resourceVersion="1")
        return self._store(node)

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"unexpected metadata patch {patch}")

    async def patch_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        assert self.node is not None
        self.status_patches.append(patch)
        status = {**self.node["status"], **patch["status"]}
        return self._store({**self.node, "status": {k: v for k, v in status.items() if v is not None}})


class AnsweringPlugin:
    async def ping(self) -> PingResponse:
        return PingResponse.from_wire({})


async def run_checks(nodes: StoredNodes, version: ServerVersion, checks: int) -> NodeController:
    async def server_version() -> ServerVersion:
        return version
    controller = NodeController(nodes, AnsweringPlugin(), settings(),  # type: ignore[arg-type]
                                server_version=server_version)
    await controller.start()
    for _ in range(checks):
        await controller.check_plugin()
        await controller.sync()
    return controller


async def test_the_controller_registers_the_node_declaring_the_feature_and_patches_no_more() -> None:
    nodes = StoredNodes(keeps_features=True)
    await run_checks(nodes, V136, 5)
    assert nodes.node is not None and nodes.node["status"]["declaredFeatures"] == WS
    assert nodes.status_patches == []


async def test_the_controller_stops_declaring_what_the_apiserver_drops() -> None:
    nodes = StoredNodes(keeps_features=False)
    controller = await run_checks(nodes, V136, 5)
    # Registration lost the field; one patch tries again, then the controller gives up on it.
    assert [p["status"].get("declaredFeatures") for p in nodes.status_patches] == [WS]
    assert controller.features == []

"""The pod controller's decisions, with the plugin as tests/fakeplugin's in-memory backend and the
apiserver as a small in-memory store (a unit test of one component; the integration tests run the
same flows against the real apiserver)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from plugin_client.errors import (
    PermanentPluginError,
    TransientPluginError,
    WireFormatError,
)
from plugin_client.models import CreateStruct, PodStatus, RetrievedPodData
from tests.fakeplugin import FakeBackend
from vnode.kube.errors import AlreadyExists, Conflict, NotFound
from vnode.kube.informer import ADDED, DELETED, MODIFIED
from vnode.kube.retry import Backoff
from vnode.node.ledger import JobLedger, LedgerEntry
from vnode.node.pod_controller import JOB_ID_ANNOTATION, PodController
from vnode.node.podstatus import apply_status_patch
from vnode.settings import settings_from_mapping

_rv = itertools.count(100)


class FakeApiServer:
    """Pods, ConfigMaps and Secrets in memory, with uid preconditions and resourceVersions; every
    change is reported to `watch` like an informer would."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}  # by uid
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.watch: Callable[[str, dict[str, Any]], None] = lambda t, o: None
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self.api_deletes: list[str] = []
        self.tokens: list[dict[str, Any]] = []

    # pods
    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        pod["metadata"]["resourceVersion"] = str(next(_rv))
        self.pods[pod["metadata"]["uid"]] = pod
        self.watch(ADDED, copy.deepcopy(pod))
        return pod

    def _find(self, ns: str, name: str) -> dict[str, Any]:
        for pod in self.pods.values():
            if pod["metadata"]["namespace"] == ns and pod["metadata"]["name"] == name:
                return pod
        raise NotFound(f"pod {ns}/{name}")

    def _changed(self, pod: dict[str, Any]) -> dict[str, Any]:
        pod["metadata"]["resourceVersion"] = str(next(_rv))
        self.watch(MODIFIED, copy.deepcopy(pod))
        return copy.deepcopy(pod)

    def mark_deleted(self, uid: str) -> None:
        pod = self.pods[uid]
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        self._changed(pod)

    def vanish(self, uid: str) -> None:
        pod = self.pods.pop(uid)
        self.watch(DELETED, pod)

    async def get(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return copy.deepcopy(self._find(ns, name))
        except NotFound:
            return None

    async def patch_status(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        pod = self._find(ns, name)
        if patch["metadata"]["uid"] != pod["metadata"]["uid"]:
            raise Conflict("uid precondition")
        self.status_patches.append((pod["metadata"]["uid"], patch))
        if "status" in patch:
            pod["status"] = apply_status_patch(pod, patch)["status"]  # type: ignore[arg-type]
        # pods/status takes metadata changes too (labels, annotations), as the apiserver does.
        for key, value in (patch["metadata"].get("annotations") or {}).items():
            if value is None:
                pod["metadata"].get("annotations", {}).pop(key, None)
            else:
                pod["metadata"].setdefault("annotations", {})[key] = value
        return self._changed(pod)

    async def delete_now(self, ns: str, name: str, uid: str) -> None:
        try:
            pod = self._find(ns, name)
        except NotFound:
            return
        if pod["metadata"]["uid"] != uid:
            raise Conflict("uid precondition")
        self.api_deletes.append(uid)
        self.vanish(uid)

    # objects
    async def get_configmap(self, ns: str, name: str) -> dict[str, Any] | None:
        cm = self.configmaps.get((ns, name))
        return copy.deepcopy(cm) if cm else None

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        secret = self.secrets.get((ns, name))
        return copy.deepcopy(secret) if secret else None

    async def create_configmap(self, ns: str, cm: dict[str, Any]) -> dict[str, Any]:
        key = (ns, cm["metadata"]["name"])
        if key in self.configmaps:
            raise AlreadyExists("exists")
        cm = copy.deepcopy(cm)
        cm["metadata"]["resourceVersion"] = str(next(_rv))
        self.configmaps[key] = cm
        return copy.deepcopy(cm)

    async def update_configmap(self, ns: str, cm: dict[str, Any]) -> dict[str, Any]:
        key = (ns, cm["metadata"]["name"])
        current = self.configmaps.get(key)
        if current is None:
            raise NotFound("configmap")
        if cm["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("resourceVersion")
        return await self._replace(key, cm)

    async def _replace(self, key: tuple[str, str], cm: dict[str, Any]) -> dict[str, Any]:
        cm = copy.deepcopy(cm)
        cm["metadata"]["resourceVersion"] = str(next(_rv))
        self.configmaps[key] = cm
        return copy.deepcopy(cm)

    async def request_token(self, ns: str, sa: str, **kwargs: Any) -> dict[str, Any]:
        self.tokens.append({"namespace": ns, "sa": sa, **kwargs})
        return {"status": {"token": f"token-for-{kwargs['pod_name']}",
                           "expirationTimestamp": "2099-01-01T00:00:00Z"}}


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def emit(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["uid"], type_, reason, message))

    def reasons(self, uid: str) -> list[str]:
        return [r for u, _, r, _ in self.events if u == uid]


class Harness:
    def __init__(self, backend: FakeBackend | None = None, **config: Any) -> None:
        self.api = FakeApiServer()
        self.backend = backend or FakeBackend()
        self.recorder = FakeRecorder()
        self.settings = settings_from_mapping(
            {"InterlinkURL": "unix:///run/fake.sock", "PodWorkers": 4, **config},
            nodename="vn-1", env={"POD_IP": "10.0.0.5"})
        self.ledger = JobLedger(self.api, "kube-node-lease", "vn-1")  # type: ignore[arg-type]
        self.ctrl = self.new_controller()
        self._ledger_task: asyncio.Task[None] | None = None

    def new_controller(self) -> PodController:
        ctrl = PodController(self.api, self.api, self.backend, self.recorder, self.ledger,  # type: ignore[arg-type]
                             self.settings)
        fast = Backoff(base=0.01, factor=1.0, cap=0.01, jitter=0)
        ctrl.create_backoff = ctrl.delete_backoff = fast
        self.api.watch = ctrl.on_pod_event
        return ctrl

    async def start(self, *, settle: bool = True) -> None:
        if self._ledger_task is None:
            self._ledger_task = asyncio.ensure_future(self.ledger.run())
        await self.ctrl.start()
        if settle:
            await self.settle()

    async def settle(self) -> None:
        await asyncio.wait_for(self.ctrl.queue.wait_idle(), 10)

    async def poll(self) -> None:
        await self.ctrl.poll_status_once()
        await self.settle()

    async def restart(self, *, settle: bool = True) -> None:
        """A new agent process: fresh controller and ledger state, same apiserver and plugin."""
        await self.ctrl.stop()
        await self.stop_ledger()
        self.ledger = JobLedger(self.api, "kube-node-lease", "vn-1")  # type: ignore[arg-type]
        self.ctrl = self.new_controller()
        for pod in self.api.pods.values():
            self.ctrl.on_pod_event(ADDED, copy.deepcopy(pod))
        await self.start(settle=settle)

    async def stop_ledger(self) -> None:
        if self._ledger_task is not None:
            self._ledger_task.cancel()
            await asyncio.gather(self._ledger_task, return_exceptions=True)
            self._ledger_task = None

    async def close(self) -> None:
        await self.ctrl.stop()
        await self.stop_ledger()

    def pod(self, uid: str) -> dict[str, Any]:
        return self.api.pods[uid]


@pytest.fixture
async def h() -> Any:
    harness = Harness()
    yield harness
    await harness.close()


def make_pod(uid: str, *, containers: tuple[str, ...] = ("main",), **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{uid}", "namespace": "ns", "uid": uid},
            "spec": {"nodeName": "vn-1", "containers": [{"name": c, "image": "busybox"} for c in containers],
                     **spec},
            "status": {"phase": "Pending"}}


async def test_a_pod_is_submitted_once_annotated_and_its_status_follows_the_plugin(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    assert h.backend.create_count("u1") == 1
    jid = h.backend.pods["u1"].jid
    assert "Submitted" in h.recorder.reasons("u1")
    await h.poll()
    assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION] == jid
    assert h.pod("u1")["status"]["phase"] == "Running"
    h.backend.finish("u1", 7)
    await h.poll()
    status = h.pod("u1")["status"]
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 7
    await h.poll()
    assert h.backend.create_count("u1") == 1


async def test_status_is_one_batched_call_for_all_pods(h: Harness) -> None:
    await h.start()
    for i in range(30):
        h.api.add_pod(make_pod(f"u{i:02d}"))
    await h.settle()
    before = len(h.backend.calls_of("status"))
    await h.poll()
    calls = h.backend.calls_of("status")[before:]
    assert len(calls) == 1 and len(calls[0].uids) == 30
    assert all(p["status"]["phase"] == "Running" for p in h.api.pods.values())


async def test_status_patches_are_skipped_when_nothing_changed(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    await h.poll()
    patches = len(h.api.status_patches)
    for _ in range(3):
        await h.poll()
    assert len(h.api.status_patches) == patches


async def test_deleting_a_pod_deletes_the_remote_job_then_the_api_object(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    h.api.mark_deleted("u1")
    await h.settle()
    assert h.backend.deleted == ["u1"]
    assert h.api.api_deletes == ["u1"]
    assert "u1" not in h.ctrl.records
    assert "u1" not in h.ledger.entries


async def test_deleting_pod_during_create_leaves_no_job() -> None:
    h = Harness(FakeBackend(delays={"create": 0.2}))
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        await h.backend.wait_for_calls("create")
        h.api.mark_deleted("u1")  # while the plugin is still creating
        await h.settle()
        assert h.backend.create_count("u1") == 1
        assert h.backend.deleted == ["u1"]
        assert h.backend.pods == {}
        assert h.api.api_deletes == ["u1"]
    finally:
        await h.close()


async def test_a_pod_force_deleted_from_the_api_is_deleted_remotely(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    h.api.vanish("u1")  # grace-0 delete by someone else: only a DELETED event arrives
    await h.settle()
    assert h.backend.deleted == ["u1"]
    assert "u1" not in h.ctrl.records


async def test_remote_delete_is_retried_until_the_plugin_confirms(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    h.backend.fail("delete", TransientPluginError("plugin restarting", op="delete"), times=3)
    h.api.mark_deleted("u1")
    await h.settle()
    assert len(h.backend.calls_of("delete", "u1")) == 4
    assert h.backend.deleted == ["u1"]
    assert h.api.api_deletes == ["u1"]


async def test_delete_of_a_pod_the_plugin_does_not_know_counts_as_done(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    del h.backend.pods["u1"]  # the plugin lost it
    h.api.mark_deleted("u1")
    await h.settle()
    assert len(h.backend.calls_of("delete", "u1")) == 1
    assert h.api.api_deletes == ["u1"]


async def test_transient_create_failures_retry_until_the_plugin_accepts(h: Harness) -> None:
    h.backend.fail("create", TransientPluginError("connection refused", op="create"), times=3)
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    assert len(h.backend.calls_of("create", "u1")) == 4
    assert "u1" in h.backend.pods
    assert h.recorder.reasons("u1").count("SubmitFailed") >= 1
    await h.poll()
    assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION]


async def test_a_permanent_create_failure_fails_the_pod_with_the_plugins_message(h: Harness) -> None:
    h.backend.fail("create", PermanentPluginError("partition gpu does not exist", op="create",
                                                  status=400))
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    status = h.pod("u1")["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "ProviderFailed"
    assert status["message"] == "partition gpu does not exist"
    assert any(r == "SubmitFailed" and "partition gpu" in m
               for u, _, r, m in h.recorder.events if u == "u1")
    assert len(h.backend.calls_of("create", "u1")) == 1
    h.api.mark_deleted("u1")
    await h.settle()
    assert h.backend.calls_of("delete") == []  # nothing was created remotely
    assert h.api.api_deletes == ["u1"]


async def test_a_missing_configmap_makes_the_pod_wait_then_run() -> None:
    h = Harness(MissingReferenceRetrySeconds=0.1)
    try:
        await h.start()
        pod = make_pod("u1")
        pod["spec"]["containers"][0]["env"] = [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}]
        h.api.add_pod(pod)
        await asyncio.sleep(0.1)
        assert h.backend.calls_of("create") == []
        waiting = h.pod("u1")["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] == "CreateContainerConfigError"
        assert "later" in waiting["message"]
        assert "Failed" in h.recorder.reasons("u1")
        assert "u1" not in h.ledger.entries  # no create was sent: nothing to reconcile after a crash
        h.api.configmaps[("ns", "later")] = {"metadata": {"name": "later"}, "data": {"k": "v"}}
        for _ in range(100):
            if h.backend.calls_of("create"):
                break
            await asyncio.sleep(0.02)
        await h.settle()
        created = h.backend.pods["u1"].data.pod["spec"]["containers"][0]["env"]
        assert created == [{"name": "X", "value": "v"}]
    finally:
        await h.close()


async def test_projected_token_is_requested_bound_to_the_pod(h: Harness) -> None:
    await h.start()
    pod = make_pod("u1", volumes=[{"name": "tok", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tok", "mountPath": "/var/run/t"}]
    h.api.add_pod(pod)
    await h.settle()
    assert h.api.tokens == [{"namespace": "ns", "sa": "default", "pod_name": "pod-u1",
                             "pod_uid": "u1", "expiration_seconds": 3607, "audience": ""}]
    data = h.backend.pods["u1"].data
    assert data.containers is not None
    assert data.containers[0].projected_volume_maps == (
        {"metadata": {"name": "tok"}, "data": {"token": "token-for-pod-u1"}},)


async def test_pods_with_a_job_id_are_adopted_after_a_restart_not_resubmitted(h: Harness) -> None:
    await h.start()
    for i in range(5):
        h.api.add_pod(make_pod(f"u{i}"))
    await h.settle()
    await h.restart()
    assert all(h.backend.create_count(f"u{i}") == 1 for i in range(5))
    await h.poll()
    assert all(p["status"]["phase"] == "Running" for p in h.api.pods.values())


async def test_a_crash_between_create_and_annotation_does_not_submit_twice(h: Harness) -> None:
    await h.start()
    # What a crash leaves behind: the ledger intent, a remote job, no JobID annotation.
    pod = h.api.add_pod(make_pod("u1"))
    h.ctrl.records.clear()
    await h.ledger.record(LedgerEntry("u1", "ns", "pod-u1"))
    await h.backend.create(RetrievedPodData(pod=copy.deepcopy(pod)))
    assert h.backend.create_count("u1") == 1
    await h.restart()
    assert h.backend.create_count("u1") == 1
    assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION] == h.backend.pods["u1"].jid


async def test_a_crash_before_the_create_reached_the_plugin_submits_once(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    h.ctrl.records.clear()
    await h.ledger.record(LedgerEntry("u1", "ns", "pod-u1"))
    await h.restart()
    assert h.backend.create_count("u1") == 1
    assert h.backend.calls_of("status", "u1")  # it asked first


async def test_pods_deleted_while_the_agent_was_down_are_deleted_remotely(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    h.api.add_pod(make_pod("u2"))
    await h.settle()
    await h.ctrl.stop()
    # While down: u1 is force-deleted from the apiserver.
    h.api.pods.pop("u1")
    await h.restart()
    assert h.backend.deleted == ["u1"]
    assert "u1" not in h.ledger.entries and "u2" in h.ledger.entries
    assert set(h.backend.pods) == {"u2"}


async def test_a_malformed_create_answer_is_reconciled_through_status_before_retrying(h: Harness) -> None:
    real_create = h.backend.create

    async def create_then_garble(data: RetrievedPodData) -> CreateStruct:
        await real_create(data)
        raise WireFormatError("PodJID", "expected string, got int", op="create")

    h.backend.create = create_then_garble  # type: ignore[method-assign]
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    assert h.backend.create_count("u1") == 1
    assert "MalformedResponse" in h.recorder.reasons("u1")
    assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION] == h.backend.pods["u1"].jid


async def test_a_malformed_status_for_one_pod_is_an_event_on_that_pod_only(h: Harness) -> None:
    real_status = h.backend.status

    async def status(pods: list[dict[str, Any]]) -> list[PodStatus]:
        if any(p["metadata"]["uid"] == "bad" for p in pods):
            await h.backend._enter("status", tuple(p["metadata"]["uid"] for p in pods), pods)
            raise WireFormatError("[0].containers", "expected list, got string", op="status")
        return await real_status(pods)

    h.backend.status = status  # type: ignore[method-assign]
    await h.start()
    for uid in ("bad", "good1", "good2"):
        h.api.add_pod(make_pod(uid))
    await h.settle()
    await h.poll()
    assert "MalformedStatus" in h.recorder.reasons("bad")
    assert "MalformedStatus" not in h.recorder.reasons("good1")
    assert h.pod("good1")["status"]["phase"] == "Running"
    assert h.pod("good2")["status"]["phase"] == "Running"
    # Next cycle: the good pods share one call again; the bad one is asked on its own.
    calls_before = len(h.backend.calls_of("status"))
    await h.poll()
    new = h.backend.calls_of("status")[calls_before:]
    assert sorted(len(c.uids) for c in new) == [1, 2]


async def test_pods_finished_before_the_agent_started_are_left_alone(h: Harness) -> None:
    done = make_pod("u1")
    done["status"] = {"phase": "Succeeded"}
    h.api.add_pod(done)
    h.ctrl.on_pod_event(ADDED, copy.deepcopy(h.pod("u1")))
    await h.start()
    assert h.backend.calls == []


async def test_an_event_during_a_backoff_does_not_lose_the_retry() -> None:
    h = Harness(MissingReferenceRetrySeconds=0.2)
    try:
        await h.start()
        pod = make_pod("u1")
        pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "later"}}]
        h.api.add_pod(pod)
        await asyncio.sleep(0.05)  # first attempt done, retry timer pending
        assert "Failed" in h.recorder.reasons("u1")
        h.ctrl.on_pod_event(MODIFIED, copy.deepcopy(h.pod("u1")))  # e.g. someone adds a label
        h.api.configmaps[("ns", "later")] = {"metadata": {"name": "later"}, "data": {"A": "1"}}
        for _ in range(200):
            if h.backend.calls_of("create"):
                break
            await asyncio.sleep(0.02)
        assert h.backend.create_count("u1") == 1
    finally:
        await h.close()


async def test_a_create_still_in_flight_after_a_crash_is_adopted_not_repeated() -> None:
    h = Harness(PluginTimeoutSeconds=30)
    try:
        await h.start()
        pod = h.api.add_pod(make_pod("u1"))
        h.ctrl.records.clear()
        # The crashed agent recorded its intent a moment ago; its create is still on the plugin.
        await h.ledger.record(LedgerEntry("u1", "ns", "pod-u1", created=time.time()))
        await h.restart(settle=False)
        await asyncio.sleep(0.1)
        assert h.backend.calls_of("status", "u1")  # it asked...
        assert h.backend.calls_of("create") == []  # ...was told "unknown", and waits
        await h.backend.create(RetrievedPodData(pod=copy.deepcopy(pod)))  # the old create lands
        for _ in range(400):
            if JOB_ID_ANNOTATION in h.pod("u1")["metadata"].get("annotations", {}):
                break
            await asyncio.sleep(0.02)
        assert h.backend.create_count("u1") == 1
        assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION] == h.backend.pods["u1"].jid
    finally:
        await h.close()


async def test_an_intent_older_than_the_plugin_timeout_is_submitted_once() -> None:
    h = Harness(PluginTimeoutSeconds=0.3)
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        h.ctrl.records.clear()
        await h.ledger.record(LedgerEntry("u1", "ns", "pod-u1", created=time.time()))
        await h.restart(settle=False)
        for _ in range(200):
            if h.backend.calls_of("create"):
                break
            await asyncio.sleep(0.02)
        await h.settle()
        assert h.backend.create_count("u1") == 1
    finally:
        await h.close()


async def test_statuses_are_not_written_while_the_plugin_is_unreachable_and_resynced_after(
        h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    await h.poll()
    assert h.pod("u1")["status"]["phase"] == "Running"
    h.ctrl.on_plugin_health(False)
    # The KCM marks the pod NotReady when the Node goes NotReady.
    pod = h.pod("u1")
    for cond in pod["status"]["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["status"] = "False"
    h.api._changed(pod)
    await h.settle()
    ready = next(c for c in h.pod("u1")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"  # not fought over while we know nothing
    h.ctrl.on_plugin_health(True)
    await h.settle()
    ready = next(c for c in h.pod("u1")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


async def test_a_pod_mounting_a_pvc_is_refused_with_a_message_and_host_paths_pass(h: Harness) -> None:
    await h.start()
    pvc = make_pod("u1", volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}}])
    pvc["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    host = make_pod("u2", volumes=[{"name": "scratch", "hostPath": {"path": "/scratch"}}])
    host["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    h.api.add_pod(pvc)
    h.api.add_pod(host)
    await h.settle()
    status = h.pod("u1")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ProviderFailed"
    assert "data (persistentVolumeClaim)" in status["message"]
    assert h.backend.create_count("u1") == 0
    assert h.backend.create_count("u2") == 1
    assert h.backend.pods["u2"].data.pod["spec"]["volumes"] == host["spec"]["volumes"]


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_job_that_starts_at_once_costs_one_pod_write_running_with_its_job_id() -> None:
    h = Harness(StatusPeriodSeconds=60)  # no full cycle during the test: the fast lane answers
    poller = asyncio.ensure_future(h.ctrl.run_status())
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        await _until(lambda: h.pod("u1")["status"]["phase"] == "Running", "the pod to run")
        await h.settle()
        (patch,) = [p for uid, p in h.api.status_patches if uid == "u1"]
        assert patch["metadata"]["annotations"] == {JOB_ID_ANNOTATION: h.backend.pods["u1"].jid}
        assert patch["status"]["phase"] == "Running"
        assert h.pod("u1")["metadata"]["annotations"][JOB_ID_ANNOTATION] == h.backend.pods["u1"].jid
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await h.close()


async def test_fresh_pods_are_asked_about_together_in_the_fast_lane() -> None:
    h = Harness(StatusPeriodSeconds=60)
    poller = asyncio.ensure_future(h.ctrl.run_status())
    try:
        await h.start()
        for i in range(20):
            h.api.add_pod(make_pod(f"u{i:02d}"))
        await _until(lambda: all(p["status"].get("phase") == "Running" for p in h.api.pods.values()),
                     "every pod to run")
        calls = h.backend.calls_of("status")
        assert sum(len(c.uids) for c in calls) == 20  # each pod asked about once: it runs at once
        assert len(calls) < 20  # and in shared calls
        assert not h.ctrl._fast_due  # out of the fast lane once running
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await h.close()


async def test_a_pod_waiting_remotely_gets_its_job_id_at_once_and_one_status_write_when_it_starts() -> None:
    h = Harness(FakeBackend(auto_run=False), StatusPeriodSeconds=60)
    poller = asyncio.ensure_future(h.ctrl.run_status())
    try:
        await h.start()
        h.api.add_pod(make_pod("u1"))
        await _until(lambda: JOB_ID_ANNOTATION in h.pod("u1")["metadata"].get("annotations", {}),
                     "the job id annotation")
        await _until(lambda: len(h.backend.calls_of("status", "u1")) >= 2, "a second fast question")
        writes = len(h.api.status_patches)  # job id with ContainerCreating
        assert h.pod("u1")["status"]["phase"] == "Pending"
        h.backend.run("u1")
        await _until(lambda: h.pod("u1")["status"]["phase"] == "Running", "the pod to run")
        await h.settle()
        assert len(h.api.status_patches) == writes + 1
        assert "u1" not in h.ctrl._fast_due
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await h.close()


async def test_the_echo_of_our_own_status_write_is_not_synced_again(h: Harness) -> None:
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    await h.poll()
    rec = h.ctrl.records["u1"]
    assert rec.echo_rv == h.pod("u1")["metadata"]["resourceVersion"]
    calls: list[str] = []
    real_sync = h.ctrl.sync

    async def counting_sync(r: Any) -> None:
        calls.append(r.uid)
        await real_sync(r)

    h.ctrl.sync = counting_sync  # type: ignore[method-assign,assignment]
    h.ctrl.on_pod_event(MODIFIED, copy.deepcopy(h.pod("u1")))  # the watch echo
    await h.settle()
    assert calls == []
    h.pod("u1")["metadata"]["labels"] = {"team": "a"}  # someone else's change is synced
    h.api._changed(h.pod("u1"))
    await h.settle()
    assert calls == ["u1"]


async def test_pods_referencing_one_configmap_at_once_cost_one_get() -> None:
    h = Harness()
    gets = 0
    real_get = h.api.get_configmap

    async def slow_get(ns: str, name: str) -> dict[str, Any] | None:
        nonlocal gets
        gets += name == "shared"
        await asyncio.sleep(0.05)  # all pods ask while the first GET is in flight
        return await real_get(ns, name)

    h.api.get_configmap = slow_get  # type: ignore[method-assign]
    h.api.configmaps[("ns", "shared")] = {"metadata": {"name": "shared"}, "data": {"k": "v"}}
    try:
        await h.start()
        for i in range(10):
            pod = make_pod(f"u{i}", volumes=[{"name": "c", "configMap": {"name": "shared"}}])
            pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "c", "mountPath": "/etc/c"}]
            h.api.add_pod(pod)
        await h.settle()
        assert all(h.backend.create_count(f"u{i}") == 1 for i in range(10))
        assert gets == 1
    finally:
        await h.close()


async def test_the_watchs_copy_wins_over_the_patch_answer_when_it_arrived_first(h: Harness) -> None:
    # The fake apiserver, like a busy real one at times, delivers the watch event of a write
    # before the write's own answer: the record keeps the informer's copy, not a second one.
    delivered: list[dict[str, Any]] = []
    watch = h.api.watch

    def recording_watch(etype: str, obj: dict[str, Any]) -> None:
        delivered.append(obj)
        watch(etype, obj)

    h.api.watch = recording_watch
    await h.start()
    h.api.add_pod(make_pod("u1"))
    await h.settle()
    await h.poll()
    rec = h.ctrl.records["u1"]
    assert rec.pod is delivered[-1]
    assert rec.pod["status"]["phase"] == "Running"
    assert rec.echo_rv == rec.pod["metadata"]["resourceVersion"]

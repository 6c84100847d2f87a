"""Pods on the virtual node against the real apiserver and scheduler: scheduling, lifecycle with
exit codes, env byte-exactness, waiting for ConfigMaps, events, and remote deletes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from plugin_client.errors import PermanentPluginError, TransientPluginError
from tests.agent_support import (
    events_for,
    eventually,
    kapply,
    kget,
    pod_manifest,
    pod_uid,
    running_agent,
    wait_default_service_account,
    wait_event,
    wait_gone,
    wait_phase,
    wait_ready,
)
from tests.conftest import Testbed
from tests.fakeplugin import FakeBackend


@pytest.fixture
async def ns(testbed: Testbed, namespace: str) -> str:
    """The test's namespace, once pods can be created in it (the default ServiceAccount exists)."""
    await wait_default_service_account(testbed, namespace)
    return namespace


async def test_the_scheduler_binds_a_tolerating_pod_and_not_one_without_the_toleration(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("tolerant", ns, agent.node))
        await kapply(testbed, pod_manifest("intolerant", ns, agent.node, tolerate=False))
        pod = await wait_phase(testbed, ns, "tolerant", "Running")
        assert pod["spec"]["nodeName"] == agent.node

        async def unschedulable() -> dict[str, Any] | None:
            p = await kget(testbed, "pod", "intolerant", "-n", ns)
            conds = (p or {}).get("status", {}).get("conditions", [])
            return next((c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"), None)
        cond = await eventually(unschedulable, "the pod without toleration to be unschedulable")
        assert cond["reason"] == "Unschedulable"
        assert "untolerated taint" in cond["message"]
        intolerant = await kget(testbed, "pod", "intolerant", "-n", ns)
        assert not intolerant["spec"].get("nodeName")
        assert agent.backend.create_count(intolerant["metadata"]["uid"]) == 0


async def test_a_pod_runs_then_succeeds_and_another_fails_with_its_exit_codes(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        two = [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]
        await kapply(testbed, pod_manifest("ok", ns, agent.node, containers=two))
        await kapply(testbed, pod_manifest("bad", ns, agent.node, containers=two))
        ok = await wait_phase(testbed, ns, "ok", "Running")
        bad = await wait_phase(testbed, ns, "bad", "Running")
        assert {c["type"]: c["status"] for c in ok["status"]["conditions"]}["Ready"] == "True"
        assert ok["status"]["startTime"] and ok["status"]["hostIP"] == "127.0.0.1"
        agent.backend.finish(ok["metadata"]["uid"], 0)
        agent.backend.finish(bad["metadata"]["uid"], {"a": 0, "b": 42})
        done_ok = await wait_phase(testbed, ns, "ok", "Succeeded")
        done_bad = await wait_phase(testbed, ns, "bad", "Failed")
        codes = {c["name"]: c["state"]["terminated"]["exitCode"]
                 for c in done_bad["status"]["containerStatuses"]}
        assert codes == {"a": 0, "b": 42}
        assert all(c["state"]["terminated"]["reason"] == "Completed"
                   for c in done_ok["status"]["containerStatuses"])
        assert agent.backend.create_count(ok["metadata"]["uid"]) == 1
        assert ok["metadata"]["annotations"]["JobID"] == agent.backend.pods[ok["metadata"]["uid"]].jid


async def test_init_containers_are_reported(testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("with-init", ns, agent.node,
                                           initContainers=[{"name": "setup", "image": "busybox"}]))
        pod = await wait_phase(testbed, ns, "with-init", "Running")
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["name"] == "setup" and init["state"]["terminated"]["exitCode"] == 0


NASTY_VALUES = {
    "QUOTES": "it's \"double\" and 'single'",
    "SUBST": "$(echo pwned) and ${HOME} and $HOME",
    "BACKTICKS": "`id` `rm -rf /`",
    "NEWLINES": "line1\nline2\r\nline3\n",
    "NON_ASCII": "ünïcødé ✓ 日本語 🚀",
    "SHELL": "; ls | cat && exit 1 || true > /tmp/x < /dev/null &",
    "BACKSLASH": "C:\\path\\n\\t\\\\",
    "EMPTY": "",
    "SPACES": "  leading and trailing  ",
}


async def test_env_with_quotes_substitutions_backticks_newlines_and_non_ascii_arrives_byte_exact(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "nasty", "namespace": ns},
                               "data": {"FROM_CM": NASTY_VALUES["NEWLINES"] + NASTY_VALUES["SUBST"]}})
        await kapply(testbed, {"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "nasty", "namespace": ns},
                               "stringData": {"FROM_SECRET": NASTY_VALUES["NON_ASCII"] + "`x`"}})
        env = [{"name": k, "value": v} for k, v in NASTY_VALUES.items()]
        env += [{"name": "CM_REF", "valueFrom": {"configMapKeyRef": {"name": "nasty", "key": "FROM_CM"}}},
                {"name": "EXPANDED", "value": "[$(QUOTES)] $$(NOT_EXPANDED)"}]
        container = {"name": "main", "image": "busybox", "env": env,
                     "envFrom": [{"secretRef": {"name": "nasty"}, "prefix": "S_"}]}
        await kapply(testbed, pod_manifest("nasty", ns, agent.node, containers=[container]))
        uid = await pod_uid(testbed, ns, "nasty")
        await eventually(lambda: _created(agent.backend, uid), "the create call")
        sent = agent.backend.pods[uid].data.pod["spec"]["containers"][0]
        received = {e["name"]: e["value"] for e in sent["env"]}
        for name, value in NASTY_VALUES.items():
            assert received[name] == value, name
        assert received["CM_REF"] == NASTY_VALUES["NEWLINES"] + NASTY_VALUES["SUBST"]
        assert received["S_FROM_SECRET"] == NASTY_VALUES["NON_ASCII"] + "`x`"
        assert received["EXPANDED"] == f"[{NASTY_VALUES['QUOTES']}] $(NOT_EXPANDED)"
        assert all(set(e) == {"name", "value"} for e in sent["env"])


async def _created(backend: FakeBackend, uid: str) -> bool:
    return uid in backend.pods


async def test_a_missing_configmap_makes_the_pod_wait_with_an_event_then_it_runs(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        container = {"name": "main", "image": "busybox",
                     "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}
        await kapply(testbed, pod_manifest("waits", ns, agent.node, containers=[container],
                                           volumes=[{"name": "cfg", "configMap": {"name": "later"}}]))
        uid = await pod_uid(testbed, ns, "waits")
        event = await wait_event(testbed, ns, uid, "FailedMount")
        assert event["type"] == "Warning" and "later" in event["message"]

        async def container_creating() -> dict[str, Any] | None:
            pod = await kget(testbed, "pod", "waits", "-n", ns)
            statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
            waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
            return waiting if waiting.get("reason") == "ContainerCreating" else None
        waiting = await eventually(container_creating, "ContainerCreating while the ConfigMap is missing")
        assert "later" in waiting["message"]
        assert agent.backend.create_count(uid) == 0
        await kapply(testbed, {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "later", "namespace": ns},
                               "data": {"app.conf": "x=1"}})
        await wait_phase(testbed, ns, "waits", "Running")
        assert agent.backend.create_count(uid) == 1
        data = agent.backend.pods[uid].data
        assert data.containers is not None
        (cm,) = data.containers[0].config_maps or ()
        assert cm["metadata"]["name"] == "later" and cm["data"] == {"app.conf": "x=1"}


async def test_service_account_token_and_root_ca_reach_the_plugin(testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("sa", ns, agent.node))
        uid = await pod_uid(testbed, ns, "sa")
        await eventually(lambda: _created(agent.backend, uid), "the create call")
        data = agent.backend.pods[uid].data
        assert data.containers is not None
        projected = [p for c in data.containers for p in c.projected_volume_maps or ()]
        (volume,) = projected
        assert volume["metadata"]["name"].startswith("kube-api-access-")
        assert set(volume["data"]) == {"token", "ca.crt", "namespace"}
        assert volume["data"]["namespace"] == ns
        assert volume["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
        review = await testbed.akubectl("create", "-f", "-", "-o", "json", input=json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
             "spec": {"token": volume["data"]["token"]}}))
        user = json.loads(review.stdout)["status"]
        assert user["authenticated"] is True
        assert user["user"]["username"] == f"system:serviceaccount:{ns}:default"


async def test_submit_events_carry_the_job_id_and_a_refusal_fails_the_pod(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("accepted", ns, agent.node))
        uid = await pod_uid(testbed, ns, "accepted")
        submitted = await wait_event(testbed, ns, uid, "Submitted")
        await eventually(lambda: _created(agent.backend, uid), "the create call")
        assert agent.backend.pods[uid].jid in submitted["message"]
        assert submitted["source"]["component"] == "vnode"
        described = await testbed.akubectl("describe", "pod", "accepted", "-n", ns)
        assert "Submitted" in described.stdout and agent.backend.pods[uid].jid in described.stdout

        agent.backend.fail("create", PermanentPluginError("account hpc123 has no allocation left",
                                                          op="create", status=403))
        await kapply(testbed, pod_manifest("refused", ns, agent.node))
        refused = await wait_phase(testbed, ns, "refused", "Failed")
        assert refused["status"]["reason"] == "ProviderFailed"
        # the plugin's own words (the client prefixes the HTTP status it answered with)
        assert refused["status"]["message"].endswith("account hpc123 has no allocation left")
        failed = await wait_event(testbed, ns, refused["metadata"]["uid"], "SubmitFailed")
        assert failed["type"] == "Warning" and "no allocation left" in failed["message"]


async def test_deleting_pods_deletes_their_remote_jobs(testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        for i in range(3):
            await kapply(testbed, pod_manifest(f"del-{i}", ns, agent.node))
        uids = [await pod_uid(testbed, ns, f"del-{i}") for i in range(3)]
        for i in range(3):
            await wait_phase(testbed, ns, f"del-{i}", "Running")
        await testbed.akubectl("delete", "pod", "-n", ns, "del-0", "del-1", "del-2", "--wait=false")
        for i in range(3):
            await wait_gone(testbed, "pod", f"del-{i}", "-n", ns)
        assert sorted(agent.backend.deleted) == sorted(uids)
        assert agent.backend.pods == {}
        events = [e for uid in uids for e in await events_for(testbed, ns, uid)]
        assert sum(e["reason"] == "DeletedRemotely" for e in events) == 3


async def test_deleting_pod_during_create_leaves_no_job(testbed: Testbed, ns: str) -> None:
    backend = FakeBackend(delays={"create": 3.0})
    async with running_agent(testbed, backend=backend) as agent:
        await kapply(testbed, pod_manifest("racy", ns, agent.node))
        uid = await pod_uid(testbed, ns, "racy")
        await backend.wait_for_calls("create", timeout=60)
        await testbed.akubectl("delete", "pod", "racy", "-n", ns, "--wait=false")
        await wait_gone(testbed, "pod", "racy", "-n", ns)
        assert backend.create_count(uid) == 1
        assert backend.deleted == [uid]
        assert backend.pods == {}


async def test_a_pod_stuck_on_a_flaky_plugin_delete_is_deleted_once_the_plugin_answers(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("flaky", ns, agent.node))
        uid = await pod_uid(testbed, ns, "flaky")
        await wait_phase(testbed, ns, "flaky", "Running")
        await agent.plugin.stop()
        await testbed.akubectl("delete", "pod", "flaky", "-n", ns, "--wait=false")
        await wait_event(testbed, ns, uid, "DeleteFailed")
        pod = await kget(testbed, "pod", "flaky", "-n", ns)
        assert pod is not None and pod["metadata"].get("deletionTimestamp")  # still Terminating
        await agent.plugin.start()
        await wait_gone(testbed, "pod", "flaky", "-n", ns)
        assert agent.backend.deleted == [uid]


async def test_many_pods_at_once_each_get_exactly_one_create(testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed, config={"PodWorkers": 10}) as agent:
        names = [f"burst-{i}" for i in range(30)]
        manifests = {"apiVersion": "v1", "kind": "List",
                     "items": [pod_manifest(n, ns, agent.node) for n in names]}
        await kapply(testbed, manifests)

        async def all_running() -> bool:
            pods = await kget(testbed, "pods", "-n", ns)
            items = (pods or {}).get("items", [])
            return len(items) == len(names) and all(p["status"].get("phase") == "Running" for p in items)
        await eventually(all_running, "30 pods Running")
        pods = await kget(testbed, "pods", "-n", ns)
        uids = [p["metadata"]["uid"] for p in pods["items"]]
        assert all(agent.backend.create_count(uid) == 1 for uid in uids)
        # one batched status call covers them all: the pods may turn Running through the fast lane for
        # fresh pods before the next full cycle, so wait for that cycle rather than expect it already
        async def one_call_for_all() -> bool:
            return any(set(uids) <= set(call.uids) for call in agent.backend.calls_of("status"))
        await eventually(one_call_for_all, "one status call asking about all 30 pods")
        await asyncio.sleep(0)


async def test_transient_submit_failures_retry_and_repeat_as_one_counted_event(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        agent.backend.fail("create", TransientPluginError("slurmctld not responding", op="create"),
                           times=3)
        await kapply(testbed, pod_manifest("patient", ns, agent.node))
        uid = await pod_uid(testbed, ns, "patient")
        await wait_phase(testbed, ns, "patient", "Running")
        assert len(agent.backend.calls_of("create", uid)) == 4
        assert agent.backend.create_count(uid) == 4  # calls; only the last one created a job
        assert list(agent.backend.pods) == [uid]

        async def counted() -> dict[str, Any] | None:
            failed = [e for e in await events_for(testbed, ns, uid) if e["reason"] == "SubmitFailed"]
            return failed[0] if len(failed) == 1 and failed[0].get("count", 0) == 3 else None
        event = await eventually(counted, "one SubmitFailed event counted 3 times")
        assert "will retry" in event["message"] and "slurmctld not responding" in event["message"]


async def test_pods_marked_not_ready_during_a_plugin_outage_are_ready_again_after_it(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("steady", ns, agent.node))
        await wait_phase(testbed, ns, "steady", "Running")

        async def ready(status: str) -> bool:
            pod = await kget(testbed, "pod", "steady", "-n", ns)
            conds = {c["type"]: c["status"] for c in (pod or {}).get("status", {}).get("conditions", [])}
            return conds.get("Ready") == status

        await eventually(lambda: ready("True"), "the pod Ready")
        await agent.plugin.stop()
        await wait_ready(testbed, agent.node, "False")
        # Another actor (e.g. the node lifecycle controller after a lost heartbeat) marks the pod
        # NotReady while the plugin cannot tell us anything.
        await testbed.akubectl("patch", "pod", "steady", "-n", ns, "--subresource=status",
                               "--type=strategic", "-p", json.dumps({"status": {"conditions": [
                                   {"type": "Ready", "status": "False", "reason": "NodeNotReady"}]}}))
        await eventually(lambda: ready("False"), "the pod marked NotReady")
        await agent.plugin.start()
        await eventually(lambda: ready("True"), "the agent to make the pod Ready again")
        pod = await kget(testbed, "pod", "steady", "-n", ns)
        assert pod["status"]["phase"] == "Running"
        assert agent.backend.create_count(pod["metadata"]["uid"]) == 1


async def test_a_pod_recreated_under_the_same_name_during_a_delete_is_not_deleted(
        testbed: Testbed, ns: str) -> None:
    backend = FakeBackend(delays={"delete": 3.0})
    async with running_agent(testbed, backend=backend) as agent:
        await kapply(testbed, pod_manifest("same", ns, agent.node))
        old = await wait_phase(testbed, ns, "same", "Running")
        await testbed.akubectl("delete", "pod", "same", "-n", ns, "--wait=false")
        await backend.wait_for_calls("delete", timeout=60)  # the agent is deleting the job...
        # ...when someone force-deletes the object and creates a new pod with the same name.
        await testbed.akubectl("delete", "pod", "same", "-n", ns, "--grace-period=0", "--force")
        await kapply(testbed, pod_manifest("same", ns, agent.node))
        new = await wait_phase(testbed, ns, "same", "Running")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        await eventually(lambda: _deleted(backend, old["metadata"]["uid"]), "the old job deleted")
        assert agent.app.agent is not None
        controller = agent.app.agent.pods
        await eventually(lambda: _forgotten(controller, old["metadata"]["uid"]),
                         "the agent to finish with the old pod (its grace-0 delete included)")
        survivor = await kget(testbed, "pod", "same", "-n", ns)
        assert survivor is not None and survivor["metadata"]["uid"] == new["metadata"]["uid"]
        assert not survivor["metadata"].get("deletionTimestamp")
        assert new["metadata"]["uid"] in backend.pods


async def _deleted(backend: FakeBackend, uid: str) -> bool:
    return uid in backend.deleted


async def _forgotten(controller: Any, uid: str) -> bool:
    return uid not in controller.records

"""Log lines about a pod carry its namespace/name/uid (and the job id when known) as record
attributes, so the JSON formatter writes them: the plugin server's create, refusal and exec lines,
the kubelet's logs/exec/refusal lines, the pod work queue's failure line and the SLURM log follower's
line. Each test drives the real component and reads the records it logged."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PermanentPluginError
from plugin_client.logformat import JsonFormatter, pod_fields, pod_fields_of
from plugin_client.models import RetrievedPodData
from tests.fakeplugin import FakeBackend, FakePlugin
from tests.kubelet_clients import Env, get, upgrade
from tests.kubelet_support import InMemoryReviews, StaticPods, SubprocessExec, make_pod
from tests.podlog_support import lines_missing_pod_fields
from vnode import spdy
from vnode.kube.events import NORMAL, EventRecorder
from vnode.kube.informer import Informer
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.backends import BackendError
from vnode.kubelet.requests import LogOptions
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS
from vnode.node.workqueue import WorkQueue
from vnode.plugins.slurm import logs as slurm_logs

UID = "5b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
POD = {"metadata": {"name": "field-carrier", "namespace": "team", "uid": UID},
       "spec": {"containers": [{"name": "main"}]}}
POD_KEYS = ("pod_namespace", "pod_name", "pod_uid", "job_id")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: getattr(record, key, None) for key in POD_KEYS}


def records_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# ---- pod_fields_of ----------------------------------------------------------------------------


def test_pod_fields_of_reads_identity_and_the_job_id_annotation() -> None:
    pod = {"metadata": {**POD["metadata"], "annotations": {"JobID": "4711"}}}  # type: ignore[dict-item]
    assert pod_fields_of(pod) == pod_fields("team", "field-carrier", UID, "4711")
    assert pod_fields_of(pod, job_id="99")["job_id"] == "99"  # the caller's fresher id wins


@pytest.mark.parametrize("pod", [{}, {"metadata": None}, {"metadata": {"name": 3, "annotations": ["JobID"]}}])
def test_pod_fields_of_a_malformed_pod_is_empty_strings(pod: dict[str, Any]) -> None:
    assert pod_fields_of(pod) == pod_fields("", "", "", "")


# ---- the plugin server ------------------------------------------------------------------------


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lf-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def plugin(backend: FakeBackend, short_tmp: Path) -> AsyncIterator[FakePlugin]:
    async with FakePlugin(backend, f"unix://{short_tmp}/plugin.sock") as fake:
        yield fake


def client_for(plugin: FakePlugin) -> PluginClient:
    return PluginClient(ClientConfig(endpoint=Endpoint.parse(plugin.url)))


async def test_plugin_server_create_line_carries_the_pod_and_its_new_job(
        plugin: FakePlugin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plugin_client.server")
    async with client_for(plugin) as client:
        result = await client.create(RetrievedPodData(pod=POD))
    (line,) = records_naming(caplog, "created team/field-carrier")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID,
                               "job_id": result.pod_jid}
    as_json = json.loads(JsonFormatter().format(line))
    assert (as_json["pod_uid"], as_json["job_id"]) == (UID, result.pod_jid)


async def test_plugin_server_refused_create_line_carries_the_pod(
        plugin: FakePlugin, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plugin_client.server")
    backend.fail("create", PermanentPluginError("create team/field-carrier: image not allowed"))
    async with client_for(plugin) as client:
        with pytest.raises(PermanentPluginError):
            await client.create(RetrievedPodData(pod=POD))
    (line,) = records_naming(caplog, "image not allowed")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID, "job_id": ""}


async def test_plugin_server_refused_delete_line_carries_the_job_id_annotation(
        plugin: FakePlugin, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plugin_client.server")
    backend.fail("delete", PermanentPluginError("delete team/field-carrier: refused"))
    annotated = {**POD, "metadata": {**POD["metadata"], "annotations": {"JobID": "4711"}}}  # type: ignore[dict-item]
    async with client_for(plugin) as client:
        with pytest.raises(PermanentPluginError):
            await client.delete(annotated)
    (line,) = records_naming(caplog, "refused")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID,
                               "job_id": "4711"}


# ---- the kubelet front ------------------------------------------------------------------------

NODE = "node-under-test"
KUBELET_UID = "0e3c6f7a-1111-2222-3333-444455556666"


class BrokenLogs:
    async def logs(self, namespace: str, pod: str, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        raise BackendError(f"logs of {namespace}/{pod}/{container}: plugin unavailable", status=503)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def reviews() -> InMemoryReviews:
    return InMemoryReviews(grants={"apiserver": {("*", "*")}})


@pytest.fixture
async def kubelet(env: Env, reviews: InMemoryReviews) -> AsyncIterator[KubeletServer]:
    pod = make_pod("ns", "pod", uid=KUBELET_UID, containers=("main",))
    pod["metadata"]["annotations"] = {"JobID": "123"}
    server = KubeletServer(
        KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0, stream_creation_timeout=0.5),
        tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
        authority=RequestAuthority(reviews, NODE),
        pods=StaticPods([pod]),
        logs=BrokenLogs(),
        execs=SubprocessExec(),
    )
    async with server:
        yield server


KUBELET_POD = {"pod_namespace": "ns", "pod_name": "pod", "pod_uid": KUBELET_UID, "job_id": "123"}


async def test_kubelet_failed_logs_line_carries_the_pod_and_its_job(
        kubelet: KubeletServer, env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vnode.kubelet")
    code, _, _ = await get(kubelet, env, "/containerLogs/ns/pod/main")
    assert code == 503
    (line,) = records_naming(caplog, "logs of ns/pod/main")
    assert fields_of(line) == KUBELET_POD


async def test_kubelet_refused_request_line_carries_the_pod_its_path_names(
        kubelet: KubeletServer, env: Env, reviews: InMemoryReviews, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vnode.kubelet")
    reviews.grants.clear()
    code, _, _ = await get(kubelet, env, "/containerLogs/ns/pod/main")
    assert code == 403
    (line,) = records_naming(caplog, "403 GET /containerLogs/ns/pod/main")
    # Not looked up for a client not allowed to see it: only what the path says.
    assert fields_of(line) == {"pod_namespace": "ns", "pod_name": "pod", "pod_uid": "", "job_id": ""}


async def test_kubelet_exec_lines_carry_the_pod_down_to_the_session(
        kubelet: KubeletServer, env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vnode.kubelet")
    peer = await upgrade(kubelet, env, "/exec/ns/pod/main?command=true&output=1")
    _, raw = peer.conn.open_stream({"streamtype": ["error"]})  # never "stdout": the session times out
    peer.write(raw)
    await peer.pump_until(lambda: any(isinstance(e, spdy.GoAway) for e in peer.events))
    await peer.client.close()
    (started,) = records_naming(caplog, "exec ns/pod/main")
    (timed_out,) = records_naming(caplog, "timed out waiting for client to create streams")
    assert fields_of(started) == fields_of(timed_out) == KUBELET_POD


# ---- the agent's pod work queue ---------------------------------------------------------------


async def test_work_queue_failure_line_carries_the_fields_of_its_key(caplog: pytest.LogCaptureFixture) -> None:
    handled = asyncio.Event()

    async def handler(uid: str) -> None:
        handled.set()
        raise RuntimeError("sync broke")

    queue: WorkQueue[str] = WorkQueue(handler, workers=1, name="pods",
                                      log_fields=lambda uid: pod_fields("team", "field-carrier", uid, "77"))
    queue.start()
    try:
        queue.add(UID)
        await asyncio.wait_for(handled.wait(), 10)
        for _ in range(100):
            if records_naming(caplog, "handling"):
                break
            await asyncio.sleep(0.01)
    finally:
        await queue.stop()
    (line,) = records_naming(caplog, f"pods: handling {UID} failed")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID, "job_id": "77"}


# ---- the SLURM plugin's log follower ----------------------------------------------------------


async def test_slurm_follow_line_carries_the_pod_and_its_job(caplog: pytest.LogCaptureFixture) -> None:
    async def job_over() -> bool:
        raise RuntimeError("squeue timed out")

    now = [0.0]
    watch = slurm_logs.JobWatch(job_over, interval=1.0, clock=lambda: now[0],
                                log_fields=pod_fields("team", "field-carrier", UID, "4711"))
    watch.poll()
    await asyncio.sleep(0)
    now[0] = 2.0
    watch.poll()
    await watch.close()
    (line,) = records_naming(caplog, "could not tell whether the job is over")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID, "job_id": "4711"}


# ---- the integration tests' check -------------------------------------------------------------


def test_a_json_line_naming_the_pod_without_its_fields_is_caught() -> None:
    """The check the JSON-log integration tests run can fail: a line naming the pod by name or uid
    without its fields, or without the job id once the job is submitted, is reported; a line about
    another pod whose name only starts alike is not."""
    carried = {"pod_namespace": "ns", "pod_name": "web", "pod_uid": UID}
    lines = [
        {"message": "created ns/web as job 7"},  # no fields at all
        {"message": f"pod {UID}: queued", **carried},  # before the job: no job id needed
        {"message": "submitted ns/web as job 7", **carried, "job_id": "7"},
        {"message": "logs of ns/web/c broke off", **carried},  # after the job: its id is missing
        {"message": "created ns/web-2 as job 8"},
        {"message": "node vn-1 Ready"},
    ]
    assert lines_missing_pod_fields(lines, "ns", "web", UID, "7") == [lines[0], lines[3]]


# ---- the agent's event recorder ---------------------------------------------------------------


def test_event_line_about_a_pod_carries_the_pod_and_the_job_id_its_controller_knows(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vnode.kube.events")
    recorder = EventRecorder(client=None, host="node-under-test")  # type: ignore[arg-type]  # emit only queues
    job_ids: dict[str, str] = {}
    recorder.job_id_of = lambda uid: job_ids.get(uid, "")
    job_ids[UID] = "4711"  # the pod's JobID annotation is not written yet
    recorder.emit(POD, NORMAL, "Submitted", "Submitted as job 4711")
    job_ids.clear()
    recorder.emit(POD, NORMAL, "TokenNotRotated", "token expires soon")  # no job (yet): none
    recorder.emit({"kind": "Node", "metadata": {"name": "vn-1", "uid": "n-1"}}, NORMAL, "NodeReady", "back")
    submitted, token, node = caplog.records
    assert fields_of(submitted) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID,
                                    "job_id": "4711"}
    assert fields_of(token) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID, "job_id": ""}
    assert fields_of(node) == dict.fromkeys(POD_KEYS)  # a node event is about no pod


def test_pod_informer_handler_failure_line_carries_the_pod(caplog: pytest.LogCaptureFixture) -> None:
    def broken(etype: str, obj: dict[str, Any]) -> None:
        raise RuntimeError("consumer bug")

    informer = Informer(None, "/api/v1/pods", broken, name="pods")  # type: ignore[arg-type]  # apply needs no client
    annotated = {"metadata": {**POD["metadata"], "annotations": {"JobID": "4711"}}}  # type: ignore[dict-item]
    informer.apply("MODIFIED", annotated)
    (line,) = records_naming(caplog, "handler failed on MODIFIED")
    assert fields_of(line) == {"pod_namespace": "team", "pod_name": "field-carrier", "pod_uid": UID, "job_id": "4711"}

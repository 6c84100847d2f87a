"""`vnode run` as a real process with the observability switches an operator uses: JSON log lines
(VNODE_LOG_FORMAT=json) and OpenTelemetry from the standard OTEL_* variables, against the real
testbed apiserver, the in-test fake plugin and an in-test OTLP/gRPC collector. Every log line is one
JSON object; lines about the pod carry its namespace/name/uid/job id and the trace of the span they
were written in; the spans reach the collector under the default service name, flushed at exit.
With the real SLURM plugin tracing too, `kubectl logs` and `kubectl exec` are SERVER spans on the
kubelet port with the plugin's own SERVER spans for the streams below them (one trace each). In both
agents' JSON logs every line whose message names the pod (name or uid) carries its
namespace/name/uid, and its job id once submitted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import (
    agent_process,
    cleanup_node,
    eventually,
    kapply,
    pod_manifest,
    short_socket_dir,
    wait_default_service_account,
    wait_gone,
    wait_phase,
    wait_ready,
    write_config,
)
from tests.conftest import Testbed, unique
from tests.fakeplugin import FakeBackend, FakePlugin
from tests.integration.test_observability_agent_tracing import PLUGIN, traced_slurm  # noqa: F401  (fixture)
from tests.integration.test_slurm_plugin import Plugin
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.otlp_support import CLIENT, INTERNAL, SERVER, Collector, Received
from tests.otlp_support import collector as collector  # noqa: F401  (fixture)
from tests.podlog_support import lines_missing_pod_fields

pytestmark = pytest.mark.integration


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            pytest.fail(f"not a JSON log line: {text!r}")
    return lines


async def test_vnode_run_writes_json_lines_about_pods_and_exports_spans_from_otel_env(
        testbed: Testbed, namespace: str, tmp_path: Path, collector: tuple[Collector, str]) -> None:  # noqa: F811
    received, endpoint = collector
    await wait_default_service_account(testbed, namespace)
    backend = FakeBackend()
    sockets = short_socket_dir()
    node, name = unique("vn-obs"), unique("json-logged")
    async with FakePlugin(backend, f"unix://{sockets}/plugin.sock") as plugin:
        agent = agent_process(testbed, node, write_config(tmp_path / "vnode.yaml", plugin.url), tmp_path / "agent.log")
        agent.env.update({"VNODE_LOG_FORMAT": "json", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                          "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "200"})
        agent.env.pop("OTEL_SERVICE_NAME", None)
        try:
            await agent.start()
            await wait_ready(testbed, node)
            await kapply(testbed, pod_manifest(name, namespace, node))
            pod = await wait_phase(testbed, namespace, name, "Running")
            uid, job_id = pod["metadata"]["uid"], pod["metadata"]["annotations"]["JobID"]
            await testbed.akubectl("-n", namespace, "delete", "pod", name, "--wait=false")
            await wait_gone(testbed, "pod", name, "-n", namespace)
            assert await agent.terminate() == 0, agent.log_tail()
        finally:
            await agent.terminate()
            await cleanup_node(testbed, node)
            shutil.rmtree(sockets, ignore_errors=True)

    lines = json_lines(tmp_path / "agent.log")
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    about = {line["message"].rsplit(": ", 1)[-1]: line for line in lines if line.get("pod_uid") == uid}
    assert {"submitted to plugin", "deleted remotely"} <= about.keys(), [line["message"] for line in lines]
    for line in about.values():
        assert (line["pod_namespace"], line["pod_name"]) == (namespace, name)
    assert about["submitted to plugin"]["job_id"] == about["deleted remotely"]["job_id"] == job_id
    # Every line naming the pod, also those not looked for above (the event lines), and each with
    # the job id once it was submitted.
    assert lines_missing_pod_fields(lines, namespace, name, uid, job_id) == []

    # The spans were flushed before the process exited: no waiting needed.
    create = next(s for s in received.spans if s.name == "create pod" and s.attributes.get("k8s.pod.uid") == uid)
    assert create.service == "vnode" and create.kind == INTERNAL
    assert create.attributes["vnode.job.id"] == job_id
    assert any(s.name == "POST /create" and s.kind == CLIENT for s in received.children(create))
    # The submit line was written inside the create span: logs and traces join on trace_id.
    assert about["submitted to plugin"]["trace_id"] == create.trace_id.hex()
    assert about["submitted to plugin"]["span_id"] == create.span_id.hex()


async def test_kubectl_logs_and_exec_are_kubelet_spans_with_the_plugins_streams_below(
        testbed: Testbed, namespace: str, tmp_path: Path, collector: tuple[Collector, str],  # noqa: F811
        traced_slurm: Plugin) -> None:  # noqa: F811
    received, endpoint = collector
    await wait_default_service_account(testbed, namespace)
    node = unique("vn-obs")
    agent = agent_process(testbed, node, write_config(tmp_path / "vnode.yaml", f"unix://{traced_slurm.socket}"),
                          tmp_path / "agent.log")
    agent.env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
                      "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "vnode-agent",
                      "VNODE_LOG_FORMAT": "json"})
    try:
        await agent.start()
        await wait_ready(testbed, node)
        await kapply(testbed, pod_manifest("talker", namespace, node, containers=[
            {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello-from-slurm; sleep 3600"]}]))
        pod = await wait_phase(testbed, namespace, "talker", "Running")
        traced_slurm.pods.append(pod)  # the fixture cancels the job if the agent could not

        async def logged() -> str | None:
            out = await testbed.akubectl("-n", namespace, "logs", "talker", check=False)
            return out.stdout if "hello-from-slurm" in out.stdout else None

        await eventually(logged, "kubectl logs to show the container's output")
        out = await testbed.akubectl("-n", namespace, "exec", "talker", "--", "echo", "exec-ok")
        assert out.stdout.strip() == "exec-ok"

        for path in ("/containerLogs", "/exec"):
            def below(path: str = path) -> Received | None:
                for span in received.spans:
                    if span.service == "vnode-agent" and span.kind == SERVER and span.name.endswith(path):
                        served = [c for c in received.children(span) if c.service == PLUGIN and c.kind == SERVER]
                        if served:
                            return served[0]
                return None

            served = await received.wait_for(below, f"the plugin's SERVER span below the kubelet's {path} span")
            assert served.name.endswith("/getLogs" if path == "/containerLogs" else "/exec")
        await testbed.akubectl("-n", namespace, "delete", "pod", "talker", "--wait=false")
        await wait_gone(testbed, "pod", "talker", "-n", namespace)
        assert await agent.terminate() == 0, agent.log_tail()
    finally:
        await agent.terminate()
        await cleanup_node(testbed, node)

    # The kubelet front's lines (the exec it served) carry the pod too.
    lines = json_lines(tmp_path / "agent.log")
    assert any(line["logger"] == "vnode.kubelet.server" and line.get("pod_uid") == pod["metadata"]["uid"]
               and line["message"].startswith("exec ") for line in lines), [line["message"] for line in lines]
    assert lines_missing_pod_fields(lines, namespace, "talker", pod["metadata"]["uid"], pod["metadata"]["annotations"]["JobID"]) == []

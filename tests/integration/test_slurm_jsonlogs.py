"""The SLURM plugin process with VNODE_LOG_FORMAT=json: every log line is one JSON object, and the
lines about a pod carry its namespace, name, uid and job id (plus the trace ids when tracing is on).
Every line whose message names the pod is checked, not only those that already carry its uid: a
line written without ``extra=pod_fields(...)`` is caught."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.conftest import unique
from tests.integration.test_slurm_plugin import Plugin, make_pod, running
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.podlog_support import lines_missing_pod_fields

pytestmark = pytest.mark.integration


@pytest.fixture
async def plugin(plain_plugin: Plugin) -> AsyncIterator[Plugin]:  # noqa: F811
    plain_plugin.extra_env = {"VNODE_LOG_FORMAT": "json"}
    await plain_plugin.stop()
    (plain_plugin.workdir / "plugin.log").unlink(missing_ok=True)
    await plain_plugin.start()
    yield plain_plugin


async def test_json_log_lines_name_the_pod_and_its_job(plugin: Plugin) -> None:
    name = unique("json-logged")
    pod = make_pod(name, containers=[{"name": "c", "image": "busybox", "command": ["sleep", "30"]}])
    namespace, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
    job_id = await plugin.create(pod)
    await plugin.wait_for(pod, running, "the pod to run")
    await plugin.c.delete(pod)
    lines = [json.loads(line) for line in (plugin.workdir / "plugin.log").read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    about = [line for line in lines if line.get("pod_uid") == uid]
    messages = " | ".join(line["message"] for line in about)
    assert "submitted as SLURM job" in messages and "cancelled" in messages
    # The plugin server's own create line too, not only the SLURM service's.
    assert any(line["logger"] == "plugin_client.server" and line["message"].startswith("created") for line in about)
    assert all(line["job_id"] == job_id and line["pod_name"] == name and line["pod_namespace"] == namespace
               for line in about)
    assert lines_missing_pod_fields(lines, namespace, name, uid, job_id) == []

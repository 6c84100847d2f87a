"""The agent's kubelet endpoint, end to end: kubectl → real apiserver → the agent's HTTPS port
(client certificate + SubjectAccessReview) → the fake plugin's logs and exec."""

from __future__ import annotations

import pytest

from tests.agent_support import (
    kapply,
    pod_manifest,
    pod_uid,
    running_agent,
    wait_default_service_account,
    wait_phase,
)
from tests.conftest import Testbed


@pytest.fixture
async def ns(testbed: Testbed, namespace: str) -> str:
    await wait_default_service_account(testbed, namespace)
    return namespace


async def test_kubectl_logs_and_exec_reach_the_plugin_through_the_agents_kubelet_port(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("talkative", ns, agent.node))
        uid = await pod_uid(testbed, ns, "talkative")
        await wait_phase(testbed, ns, "talkative", "Running")
        agent.backend.append_log(uid, "main", "first line\nsecond line ünïcødé\n".encode())

        logs = await testbed.akubectl("logs", "talkative", "-n", ns, "-c", "main")
        assert logs.stdout == "first line\nsecond line ünïcødé\n"
        tail = await testbed.akubectl("logs", "talkative", "-n", ns, "--tail=1")
        assert tail.stdout == "second line ünïcødé\n"

        exec_out = await testbed.akubectl("exec", "talkative", "-n", ns, "-c", "main", "--",
                                          "echo", "hello from", "the plugin")
        assert exec_out.stdout == "hello from the plugin\n"
        failed = await testbed.akubectl("exec", "talkative", "-n", ns, "--", "exit", "3", check=False)
        assert failed.returncode == 3


async def test_kubectl_logs_of_an_unknown_container_is_an_error_not_a_hang(
        testbed: Testbed, ns: str) -> None:
    async with running_agent(testbed) as agent:
        await kapply(testbed, pod_manifest("quiet", ns, agent.node))
        await wait_phase(testbed, ns, "quiet", "Running")
        done = await testbed.akubectl("logs", "quiet", "-n", ns, "-c", "nope", check=False)
        assert done.returncode != 0
        assert "nope" in done.stderr

"""Issue 8's proof, end to end: the vnode agent offloads a pod that burns CPU and holds memory to the
SLURM plugin on the testbed SLURM, and `kubectl top pod` / `kubectl top node` show its non-zero CPU and
memory through the real metrics-server (hack/metrics-server) and the agent's kubelet port, whose
serving certificate is CSR-issued by the cluster CA (the agent's opt-in approver) and verified by
metrics-server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import (
    kapply,
    pod_manifest,
    running_agent,
    wait_default_service_account,
    wait_gone,
    wait_phase,
)
from tests.conftest import Testbed
from tests.integration.test_observability_kubectl_top import BURN, LABEL, until
from tests.integration.test_slurm_plugin import Plugin
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)
from tests.integration.test_slurm_usage import plugin  # noqa: F401  (fixture: the plugin with sstat and sampling)
from tests.observability_support import MetricsServer

pytestmark = pytest.mark.integration


async def test_kubectl_top_shows_a_pod_the_agent_offloaded_to_slurm(
    testbed: Testbed, plugin: Plugin, namespace: str, tmp_path: Path,  # noqa: F811
) -> None:
    await wait_default_service_account(testbed, namespace)
    config: dict[str, Any] = {"InterlinkURL": f"unix://{plugin.socket}", "DisableCSR": False, "KubeletCSRAutoApprove": True}
    async with running_agent(testbed, config=config) as agent:
        await testbed.akubectl("label", "node", agent.node, f"{LABEL}={agent.node}")
        await kapply(testbed, pod_manifest("burner", namespace, agent.node, containers=[
            {"name": "burn", "image": "python:3.11", "command": ["python3", "-c", BURN]}]))
        plugin.pods.append(await wait_phase(testbed, namespace, "burner", "Running"))  # the fixture cancels its job if we cannot
        metrics_server = MetricsServer(testbed, tmp_path / "ms", f"{LABEL}={agent.node}")
        try:
            await metrics_server.start()

            async def top_pod() -> tuple[bool, str]:
                out = await testbed.akubectl("-n", namespace, "top", "pod", "burner", "--no-headers", check=False)
                match = re.match(r"burner\s+(\d+)m\s+(\d+)Mi", out.stdout.strip())
                return bool(match and int(match.group(1)) > 0 and int(match.group(2)) >= 128), out.stdout + out.stderr

            print(f"\nkubectl top pod: {(await until(top_pod, 'kubectl top pod to show the burner')).strip()}")

            async def top_node() -> tuple[bool, str]:
                out = await testbed.akubectl("top", "node", agent.node, "--no-headers", check=False)
                match = re.match(rf"{re.escape(agent.node)}\s+(\d+)m\s+(?:\S+%\s+)?(\d+)Mi(?:\s+\S+%)?", out.stdout.strip())
                return bool(match and int(match.group(1)) > 0 and int(match.group(2)) >= 128), out.stdout + out.stderr

            print(f"kubectl top node: {(await until(top_node, 'kubectl top node to show the node')).strip()}")
        except BaseException:
            print(f"metrics-server log:\n{metrics_server.tail()}")
            raise
        finally:
            await metrics_server.stop()
            await testbed.akubectl("-n", namespace, "delete", "pod", "burner", "--wait=false", check=False)
            await wait_gone(testbed, "pod", "burner", "-n", namespace)  # the agent cancels the job

"""The SLURM plugin's usage extension against the real testbed SLURM (jobacct_gather/linux, slurmdbd):
per-container figures from job.sh's sampler, job figures from one sstat for all running jobs and
sacct's final CPU once the job is over, driven through plugin_client as the agent drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from plugin_client.usage import PodUsage
from tests.conftest import Testbed
from tests.integration.test_slurm_plugin import WAIT, Plugin, make_pod, running
from tests.integration.test_slurm_plugin import plugin as plain_plugin  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

MIB = 2**20


@pytest.fixture
async def plugin(plain_plugin: Plugin, testbed: Testbed) -> AsyncIterator[Plugin]:  # noqa: F811
    plain_plugin.extra_config = (f"SstatPath: {testbed.slurm_bin_dir / 'sstat'}\nUsageSampleSeconds: 1\n"
                                 "UsageCacheSeconds: 0\nDefaultMemory: 512Mi\n")
    await plain_plugin.stop()
    await plain_plugin.start()
    yield plain_plugin


FLAG = "/flag/done"  # in a hostPath directory the test shares with every container
MOUNT = [{"name": "flag", "mountPath": "/flag"}]


def flag_volume(directory: Path) -> list[dict[str, object]]:
    return [{"name": "flag", "hostPath": {"path": str(directory), "type": "Directory"}}]


def burner(cpu_seconds: float, mib: int) -> dict[str, object]:
    """Holds `mib` MiB, burns `cpu_seconds` of its own CPU, then idles until the flag exists."""
    code = (f"import os, time\nb = bytearray({mib} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
            f"while time.process_time() < {cpu_seconds}: pass\n"
            f"while not os.path.exists({FLAG!r}): time.sleep(0.2)\n")
    return {"name": "burn", "image": "python:3.11", "command": ["python3", "-c", code], "volumeMounts": MOUNT}


def waiter(name: str) -> dict[str, object]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", f"while [ ! -e {FLAG} ]; do sleep 0.2; done"],
            "volumeMounts": MOUNT}


async def usage_until(plugin: Plugin, pods: list[dict[str, object]], ready: Callable[[dict[str, PodUsage]], bool],
                      what: str) -> dict[str, PodUsage]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        answer = {u.uid: u for u in await plugin.c.usage(pods)}
        if ready(answer):
            return answer
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}; last usage {[u.to_wire() for u in answer.values()]}")
        await asyncio.sleep(1.0)


def uid(pod: dict[str, object]) -> str:
    return pod["metadata"]["uid"]  # type: ignore[index, no-any-return]


async def test_running_pods_report_per_container_and_job_usage_then_final_cpu(plugin: Plugin, tmp_path: Path) -> None:
    shared = tmp_path / "flag"
    shared.mkdir()
    shared.chmod(0o777)
    flag = shared / "done"
    busy = make_pod("busy", containers=[burner(2.0, 96), waiter("idle")], volumes=flag_volume(shared))
    calm = make_pod("calm", containers=[waiter("only")], volumes=flag_volume(shared))
    try:
        for pod in (busy, calm):
            await plugin.create(pod)
            await plugin.wait_for(pod, running, f"{pod['metadata']['name']} to run")  # type: ignore[index]

        def measured(answer: dict[str, PodUsage]) -> bool:
            pod = answer.get(uid(busy))
            if pod is None or pod.cpu_usage_core_nanoseconds is None:
                return False
            by_name = {c.name: c for c in pod.containers}
            return ("burn" in by_name and by_name["burn"].cpu_usage_core_nanoseconds >= 2 * 10**9
                    and pod.cpu_usage_core_nanoseconds >= 10**9)

        answer = await usage_until(plugin, [busy, calm], measured, "the burner's CPU in its sample and in sstat")
        pod = answer[uid(busy)]
        burn, idle = (next(c for c in pod.containers if c.name == n) for n in ("burn", "idle"))
        assert burn.memory_working_set_bytes >= 96 * MIB
        assert idle.memory_working_set_bytes < 96 * MIB and idle.cpu_usage_core_nanoseconds < 10**9
        assert burn.start_time is not None and burn.timestamp is not None and burn.timestamp >= burn.start_time
        assert pod.memory_working_set_bytes is not None and pod.memory_working_set_bytes >= 96 * MIB  # sstat's mem= is current RSS
        assert (pod.name, pod.namespace) == ("busy", busy["metadata"]["namespace"])  # type: ignore[index]
        assert uid(calm) in answer

        # One sstat for both running jobs per refresh, however many pods are asked about.
        before = (await plugin.system_info())["slurm_calls"].get("sstat", 0)
        await plugin.c.usage([busy, calm])
        assert (await plugin.system_info())["slurm_calls"].get("sstat", 0) - before == 1
    finally:
        flag.touch()

    await plugin.wait_for(busy, lambda s: all(c.state.terminated is not None for c in s.containers or ()), "the pod to end")

    def final(answer: dict[str, PodUsage]) -> bool:
        pod = answer.get(uid(busy))
        return pod is not None and pod.memory_working_set_bytes == 0 and (pod.cpu_usage_core_nanoseconds or 0) >= 2 * 10**9

    answer = await usage_until(plugin, [busy], final, "sacct's final CPU of the finished job")
    burn = next(c for c in answer[uid(busy)].containers if c.name == "burn")
    assert burn.cpu_usage_core_nanoseconds >= 2 * 10**9  # its last sample stays


async def test_pods_the_plugin_does_not_know_are_left_out(plugin: Plugin) -> None:
    assert await plugin.c.usage([make_pod("ghost", containers=[{"name": "c", "image": "busybox"}])]) == []

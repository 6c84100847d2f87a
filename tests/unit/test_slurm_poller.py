"""The job poller: batched squeue + sacct, a per-job cache, shared in-flight refreshes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vnode.plugins.slurm.config import SlurmConfig
from vnode.plugins.slurm.parsers import JobInfo
from vnode.plugins.slurm.poller import JobPoller, info_from_json, info_to_json
from vnode.plugins.slurm.slurm_cli import SlurmCli, SlurmCommandError
from vnode.plugins.slurm.states import job_state


class FakeCli(SlurmCli):
    """squeue knows `queue`; sacct knows `history`; every call is recorded."""

    def __init__(self, queue: dict[str, str], history: dict[str, str], sacct_fails: bool = False) -> None:
        super().__init__(SlurmConfig())
        self.queue, self.history, self.sacct_fails = queue, history, sacct_fails
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.gate: asyncio.Event | None = None

    async def squeue(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self.calls["squeue"] += 1
        self.asked.append(("squeue", tuple(job_ids)))
        if self.gate is not None:
            await self.gate.wait()
        return {j: JobInfo(j, job_state(self.queue[j]), source="squeue") for j in job_ids if j in self.queue}

    async def sacct(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self.calls["sacct"] += 1
        self.asked.append(("sacct", tuple(job_ids)))
        if self.sacct_fails:
            raise SlurmCommandError(["sacct"], "sacct exited 1: Slurm accounting storage is disabled", 1)
        return {j: JobInfo(j, job_state(self.history[j]), exit_code=0, source="sacct") for j in job_ids if j in self.history}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_squeue_and_one_sacct_cover_all_asked_jobs() -> None:
    cli = FakeCli({"1": "RUNNING", "2": "PENDING"}, {"3": "COMPLETED"})
    poller = JobPoller(cli, ttl=2.0, active_jobs=list, clock=Clock())
    infos = await poller.get(["1", "2", "3", "4"])
    assert infos["1"].state.name == "RUNNING" and infos["3"].state.name == "COMPLETED" and infos["4"] is None  # type: ignore[union-attr]
    assert cli.asked == [("squeue", ("1", "2", "3", "4")), ("sacct", ("3", "4"))]


async def test_per_pod_calls_within_the_ttl_reuse_one_refresh_of_all_active_jobs() -> None:
    jobs = {str(i): "RUNNING" for i in range(200)}
    cli = FakeCli(jobs, {})
    clock = Clock()
    poller = JobPoller(cli, ttl=2.0, active_jobs=lambda: list(jobs), clock=clock)
    for job in jobs:  # the interLink VK asks about one pod per call
        assert (await poller.get([job]))[job] is not None
    assert cli.calls["squeue"] == 1 and cli.calls["sacct"] == 0
    clock.now += 2.5
    await poller.get(["7"])
    assert cli.calls["squeue"] == 2


async def test_each_job_gets_its_own_state_not_the_previous_answer() -> None:
    cli = FakeCli({"1": "RUNNING", "2": "FAILED"}, {})
    poller = JobPoller(cli, ttl=10.0, active_jobs=list, clock=Clock())
    assert (await poller.get(["1"]))["1"].state.name == "RUNNING"  # type: ignore[union-attr]
    assert (await poller.get(["2"]))["2"].state.name == "FAILED"  # type: ignore[union-attr]


async def test_concurrent_callers_share_one_in_flight_squeue() -> None:
    cli = FakeCli({"1": "RUNNING", "2": "RUNNING"}, {})
    cli.gate = asyncio.Event()
    poller = JobPoller(cli, ttl=2.0, active_jobs=lambda: ["1", "2"], clock=Clock())
    first = asyncio.ensure_future(poller.get(["1"]))
    second = asyncio.ensure_future(poller.get(["2"]))
    await asyncio.sleep(0)
    cli.gate.set()
    await asyncio.gather(first, second)
    assert cli.calls["squeue"] == 1


async def test_final_states_are_never_asked_again() -> None:
    cli = FakeCli({"1": "COMPLETED"}, {})
    clock = Clock()
    finals: list[str] = []
    poller = JobPoller(cli, ttl=1.0, active_jobs=list, clock=clock)
    poller.on_final = lambda info: finals.append(info.job_id)
    await poller.get(["1"])
    clock.now += 100
    await poller.get(["1"])
    assert cli.calls["squeue"] == 1 and finals == ["1"]


async def test_preempted_jobs_are_asked_again_because_slurm_may_requeue_them() -> None:
    cli = FakeCli({"1": "PREEMPTED"}, {})
    clock = Clock()
    poller = JobPoller(cli, ttl=1.0, active_jobs=list, clock=clock)
    await poller.get(["1"])
    clock.now += 2
    cli.queue["1"] = "PENDING"
    assert (await poller.get(["1"]))["1"].state.name == "PENDING"  # type: ignore[union-attr]


async def test_sacct_failure_degrades_to_files_and_is_retried_later() -> None:
    cli = FakeCli({}, {"1": "COMPLETED"}, sacct_fails=True)
    clock = Clock()
    poller = JobPoller(cli, ttl=1.0, active_jobs=list, clock=clock)
    assert (await poller.get(["1"]))["1"] is None
    clock.now += 2
    await poller.get(["1"])
    assert cli.calls["sacct"] == 1  # not retried within SACCT_RETRY_SECONDS
    clock.now += 120
    cli.sacct_fails = False
    assert (await poller.get(["1"]))["1"].state.name == "COMPLETED"  # type: ignore[union-attr]


def test_final_state_round_trips_through_json() -> None:
    info = JobInfo("9", job_state("TIMEOUT"), "TimeLimit", 0, 15, None, None, "n1", "sacct")
    assert info_from_json(info_to_json(info)) == info
    assert info_from_json({"nonsense": 1}) is None


async def test_without_a_cache_each_request_costs_exactly_one_squeue() -> None:
    cli = FakeCli({"1": "RUNNING", "2": "RUNNING"}, {})
    clock = Clock()
    poller = JobPoller(cli, ttl=0.0, active_jobs=lambda: ["1", "2"], clock=clock)
    for _ in range(3):
        clock.now += 0.1
        await poller.get(["1", "2"])
    assert cli.calls["squeue"] == 3

"""The SLURM plugin's usage figures: sstat/sacct parsing (recorded from the testbed's SLURM 22.05),
job.sh's per-container sampler actually run under bash, the pod figures built from both, and the
job-level cache that keeps it to one sstat per refresh."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plugin_client.usage import ContainerUsage
from tests.unit.test_slurm_script import build, materialize, pod_json, run_job_sh
from vnode.plugins.slurm.config import parse_config
from vnode.plugins.slurm.parsers import (
    JobUsage,
    parse_duration_ns,
    parse_sacct_usage,
    parse_sstat,
    tres_values,
)
from vnode.plugins.slurm.slurm_cli import SlurmCommandError
from vnode.plugins.slurm.status import ContainerFiles, SpecContainer
from vnode.plugins.slurm.usage import JobUsageCache, parse_samples, pod_usage

# `sstat -a --noconvert --noheader --parsable2 -j 1426,1630 -o JobID,TRESUsageInTot` on the testbed,
# plus an exec step (srun --overlap) and the complaint about a finished job (stderr, exit 0).
SSTAT = (
    "1426.batch|cpu=00:00:10,energy=0,fs/disk=3401411,mem=293015552,pages=0,vmem=300548096\n"
    "1426.0|cpu=00:01:02,energy=0,fs/disk=10,mem=1048576,pages=0,vmem=2097152\n"
    "1630.batch|cpu=00:00:00,energy=0,fs/disk=1704613,mem=17108992,pages=0,vmem=21430272\n"
    "1631.extern|cpu=,mem=\n"
)
# `sacct --noconvert --noheader --parsable2 -j 1426,1630,1788 -o JobID,TotalCPU,TRESUsageInTot`: in 1788
# the burner was killed with its PID namespace, so TotalCPU missed it and the steps' TRES cpu has it.
SACCT = ("1426|00:13.081|\n1426.batch|00:13.081|cpu=00:00:12,energy=0,mem=293015552\n"
         "1630|1-02:03:04.5|\n1630.batch|00:00.398|cpu=00:00:00,mem=331669504\n"
         "1788|00:01.284|\n1788.batch|00:01.284|cpu=00:00:02,mem=112566272\n1788.extern|00:00:00|cpu=00:00:00,mem=0\n")


@pytest.mark.parametrize(
    ("text", "ns"),
    [("00:00:05", 5 * 10**9), ("00:13.081", 13_081_000_000), ("01:02:03", 3723 * 10**9),
     ("1-02:03:04.5", (26 * 3600 + 184) * 10**9 + 500_000_000), ("12:34", 754 * 10**9)],
)
def test_slurm_durations_become_nanoseconds(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "INVALID", "5", "00:00:xx", "-1:00"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration_ns(text) is None


def test_tres_strings_split_into_values() -> None:
    assert tres_values("cpu=00:00:05,mem=12,fs/disk=3") == {"cpu": "00:00:05", "mem": "12", "fs/disk": "3"}


def test_sstat_rows_are_summed_per_job_over_their_steps() -> None:
    assert parse_sstat(SSTAT) == {
        "1426": JobUsage("1426", 72 * 10**9, 293015552 + 1048576, "sstat"),
        "1630": JobUsage("1630", 0, 17108992, "sstat"),
    }


def test_sacct_usage_takes_the_larger_of_total_cpu_and_the_steps_tres_cpu() -> None:
    assert parse_sacct_usage(SACCT) == {
        "1426": JobUsage("1426", 13_081_000_000, 0, "sacct"),
        "1630": JobUsage("1630", (26 * 3600 + 184) * 10**9 + 500_000_000, 0, "sacct"),
        "1788": JobUsage("1788", 2 * 10**9, 0, "sacct"),
    }


def test_samples_file_is_read_leniently() -> None:
    text = json.dumps({"time": 1795642554.8, "containers": {
        "run-burn": {"cpu_ns": 1970000000, "rss": 118644736, "rate": 383247609, "time": 1795642554.8},
        "run-idle": {"cpu_ns": 0, "rss": 1671168, "rate": None, "time": 1795642551.7},
        "run-bad": {"cpu_ns": -1, "rss": 1, "time": 1.0},
        "run-junk": "x"}})
    samples = parse_samples(text)
    assert set(samples) == {"run-burn", "run-idle"}
    assert samples["run-burn"].rate_nano_cores == 383247609
    assert samples["run-idle"].rate_nano_cores is None
    assert samples["run-burn"].time == datetime.fromtimestamp(1795642554.8, UTC)
    assert parse_samples("{not json") == {} and parse_samples("[]") == {}


# --- pod figures ----------------------------------------------------------------------------------

T = datetime(2026, 11, 25, 21, 0, 0, tzinfo=UTC)
MAIN, SIDE = SpecContainer("main", "busybox", False), SpecContainer("side", "busybox", False)


def test_containers_get_their_samples_and_the_pod_the_job_figures() -> None:
    samples = parse_samples(json.dumps({"containers": {
        "run-main": {"cpu_ns": 5, "rss": 50, "rate": 1, "time": T.timestamp()},
        "run-side": {"cpu_ns": 2, "rss": 20, "rate": None, "time": T.timestamp()}}}))
    files = {"main": ContainerFiles(started=T)}
    usage = pod_usage("u", "p", "n", [MAIN, SIDE], files, samples, JobUsage("1", 9, 99, "sstat"), T)
    assert usage is not None
    assert usage.containers == (ContainerUsage("main", 5, 50, start_time=T, timestamp=T, cpu_usage_nano_cores=1),
                                ContainerUsage("side", 2, 20, start_time=None, timestamp=T))
    assert (usage.cpu_total, usage.memory_total, usage.timestamp) == (9, 99, T)


def test_the_pod_is_never_below_the_sum_of_its_containers() -> None:
    samples = parse_samples(json.dumps({"containers": {
        "run-main": {"cpu_ns": 5 * 10**9, "rss": 500, "time": T.timestamp()},
        "run-side": {"cpu_ns": 10**9, "rss": 200, "time": T.timestamp()}}}))
    usage = pod_usage("u", "p", "n", [MAIN, SIDE], {}, samples, JobUsage("1", 4 * 10**9, 600, "sstat"), T)
    assert usage is not None and (usage.cpu_total, usage.memory_total) == (6 * 10**9, 700)


def test_an_ended_container_keeps_its_cpu_and_holds_no_memory() -> None:
    samples = parse_samples(json.dumps({"containers": {"run-main": {"cpu_ns": 5, "rss": 50, "rate": 3, "time": T.timestamp()}}}))
    end = datetime(2026, 11, 25, 21, 0, 2, tzinfo=UTC)
    usage = pod_usage("u", "p", "n", [MAIN], {"main": ContainerFiles(started=T, finished=end)}, samples,
                      JobUsage("1", 9, 0, "sacct"), end)
    assert usage is not None
    assert usage.containers == (ContainerUsage("main", 5, 0, start_time=T, timestamp=end, cpu_usage_nano_cores=0),)
    assert (usage.cpu_total, usage.memory_total) == (9, 0)


def test_without_samples_a_single_container_gets_the_job_figures() -> None:
    usage = pod_usage("u", "p", "n", [MAIN], {}, {}, JobUsage("1", 9, 99, "sstat"), T)
    assert usage is not None and usage.containers == (ContainerUsage("main", 9, 99, timestamp=T),)


def test_without_samples_several_containers_get_pod_figures_only() -> None:
    usage = pod_usage("u", "p", "n", [MAIN, SIDE], {}, {}, JobUsage("1", 9, 99, "sstat"), T)
    assert usage is not None and usage.containers == () and usage.cpu_total == 9


def test_nothing_measured_is_no_usage_rather_than_zeros() -> None:
    assert pod_usage("u", "p", "n", [MAIN], {}, {}, None, None) is None


# --- the job-level cache --------------------------------------------------------------------------


class FakeCli:
    def __init__(self) -> None:
        self.sstat_calls: list[list[str]] = []
        self.sacct_calls: list[list[str]] = []

    async def sstat(self, job_ids: list[str]) -> dict[str, JobUsage]:
        self.sstat_calls.append(list(job_ids))
        await asyncio.sleep(0.01)
        return {j: JobUsage(j, 10, 20, "sstat") for j in job_ids}

    async def sacct_usage(self, job_ids: list[str]) -> dict[str, JobUsage]:
        self.sacct_calls.append(list(job_ids))
        return {j: JobUsage(j, 30, 0, "sacct") for j in job_ids if j != "9"}


async def test_concurrent_scrapes_share_one_sstat_for_all_running_jobs() -> None:
    cli, now = FakeCli(), [0.0]
    cache = JobUsageCache(cli, ttl=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    answers = await asyncio.gather(*(cache.get(["1", "2", "3"], []) for _ in range(5)))
    assert cli.sstat_calls == [["1", "2", "3"]]
    assert all(set(a) == {"1", "2", "3"} for a in answers)
    await cache.get(["1", "2"], [])
    assert len(cli.sstat_calls) == 1  # within the TTL
    now[0] = 6.0
    await cache.get(["1", "2"], [])
    assert cli.sstat_calls[-1] == ["1", "2"]


async def test_a_newly_running_job_refreshes_before_the_ttl() -> None:
    cli = FakeCli()
    cache = JobUsageCache(cli, ttl=5.0, clock=lambda: 0.0)  # type: ignore[arg-type]
    await cache.get(["1"], [])
    assert "4" in await cache.get(["1", "4"], [])
    assert cli.sstat_calls == [["1"], ["1", "4"]]


async def test_final_figures_are_asked_of_sacct_once() -> None:
    cli, now = FakeCli(), [0.0]
    cache = JobUsageCache(cli, ttl=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    first = await cache.get([], ["7", "9"])
    assert first["7"][0].cpu_ns == 30 and "9" not in first
    await cache.get([], ["7", "9"])
    assert cli.sacct_calls == [["7", "9"]]  # 7 is final for good; 9 waits for the retry delay
    now[0] = 61.0
    await cache.get([], ["7", "9"])
    assert cli.sacct_calls == [["7", "9"], ["9"]]


async def test_a_failing_sstat_is_not_asked_again_for_a_minute() -> None:
    cli, now = FakeCli(), [0.0]

    async def broken(ids: list[str]) -> dict[str, JobUsage]:
        cli.sstat_calls.append(list(ids))
        raise SlurmCommandError(["sstat"], "sstat: command not found")

    cli.sstat = broken  # type: ignore[method-assign]
    cache = JobUsageCache(cli, ttl=0.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await cache.get(["1"], []) == {}
    now[0] = 30.0
    assert await cache.get(["1"], []) == {}
    assert len(cli.sstat_calls) == 1
    now[0] = 61.0
    await cache.get(["1"], [])
    assert len(cli.sstat_calls) == 2


async def test_a_final_figure_never_goes_below_what_sstat_showed_while_running() -> None:
    cli = FakeCli()
    cli.sstat = lambda ids: _figures(ids, 50)  # type: ignore[method-assign]
    cache = JobUsageCache(cli, ttl=0.0, clock=lambda: 0.0)  # type: ignore[arg-type]
    await cache.get(["7"], [])
    final = await cache.get([], ["7"])
    assert final["7"][0].cpu_ns == 50  # sacct said 30


async def _figures(ids: list[str], cpu: int) -> dict[str, JobUsage]:
    return {j: JobUsage(j, cpu, 1, "sstat") for j in ids}


# --- the sampler, run for real --------------------------------------------------------------------

# A runtime that runs the container's command on the host (the sampler looks at real processes).
EXEC_RUNTIME = textwrap.dedent("""\
    #!{python}
    import os, sys
    argv = sys.argv[1:]
    i = 1
    while argv[i].startswith("-"):
        i += 2 if argv[i] in ("--env-file", "--pwd", "--bind", "-B") else 1
    os.execvp(argv[i + 1], argv[i + 1:])
    """)

# Burns one second of its own CPU, holds 64 MiB, then waits until the sampler has seen both.
BURN = textwrap.dedent("""\
    import json, os, time
    block = bytearray(64 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    while time.process_time() < 1.0:
        pass
    path = os.path.join(os.environ["workingPath"], "usage.json")
    for _ in range(1200):
        try:
            seen = json.load(open(path))["containers"].get("run-burn", {})
        except (OSError, ValueError):
            seen = {}
        if seen.get("cpu_ns", 0) >= 10**9 and seen.get("rss", 0) >= 64 * 2**20:
            raise SystemExit(0)
        time.sleep(0.1)
    raise SystemExit(1)
    """)


def test_job_sh_samples_each_container_tree_separately(tmp_path: Path) -> None:
    runtime = tmp_path / "exec-runtime"
    runtime.write_text(EXEC_RUNTIME.format(python=sys.executable))
    runtime.chmod(0o755)
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nSingularityPath: {runtime}\nUsageSampleSeconds: 1\n",
                             {"SHARED_FS": "true"})
    done = tmp_path / "burn-done"
    pod = pod_json(containers=[
        {"name": "burn", "image": "busybox", "command": ["sh", "-c", f'python3 -c "$0" && touch {done}', BURN]},
        {"name": "idle", "image": "busybox", "command": ["sh", "-c", f"while [ ! -e {done} ]; do sleep 0.2; done"]},
    ])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log", timeout=180)
    assert proc.returncode == 0, proc.stderr
    samples: dict[str, Any] = json.loads((pod_dir / "usage.json").read_text())["containers"]
    assert samples["run-burn"]["cpu_ns"] >= 10**9
    assert samples["run-burn"]["rss"] >= 64 * 2**20
    # The idle container's tree is its own: none of the burner's CPU or memory.
    assert samples["run-idle"]["cpu_ns"] < 10**9 / 2
    assert samples["run-idle"]["rss"] < 64 * 2**20
    assert (pod_dir / "run-burn.pid").read_text().strip().isdigit()


def test_no_sampler_when_usage_sampling_is_off(tmp_path: Path) -> None:
    config, _ = parse_config(f"DataRootFolder: {tmp_path / 'jobs'}\nUsageSampleSeconds: 0\n", {"SHARED_FS": "true"})
    _, job, _ = build(config, pod_json(containers=[{"name": "a", "image": "busybox"}]))
    assert "vnode_sampler=" not in job.job_sh

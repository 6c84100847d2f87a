"""Real SLURM end to end: vnode's agent + vnode's SLURM plugin on the testbed's SLURM, containers
through the testbed's singularity stand-in.

* RUN_PODS short pods (`echo`), created at once: time until all Succeeded, per-pod latency, and how
  many times the plugin ran each SLURM command (counting shims in front of sbatch/squeue/sacct/
  scancel, configured as SbatchPath & co, so the same count works for any plugin that takes them);
* `kubectl logs -f` line latency: a pod prints its clock every LOG_LINE_PERIOD; kubectl's receive
  time minus the printed time (same machine, same clock);
* full-log throughput: a pod writes LOG_BYTES to stdout; `kubectl logs` reads it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from vnode.kube.client import KubeClient
from vnode.kube.errors import KubeError

from .burst import TOLERATION, PodTimes, PodWatch, _wait_default_sa
from .procs import Proc
from .run import REPO, VnodeAgent, cleanup_node, wait_node_ready
from .stats import latencies, percentile

RUN_PODS = 200
LOG_LINE_PERIOD = 0.2  # seconds between lines of the follow test
LOG_LINES = 100
LOG_BYTES = 100 * 10**6
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo")
TIMEOUT = 900.0  # 200 jobs on the 8-CPU test node, 8 at a time; bounds a hang only


def shim(real: str, counter: Path) -> str:
    """A wrapper that counts its invocations (one line each) and execs the real command."""
    return f'#!/bin/sh\necho x >> {counter}\nexec {real} "$@"\n'


def write_shims(workdir: Path) -> dict[str, Path]:
    shims = workdir / "shims"
    shims.mkdir()
    out = {}
    for cmd in SLURM_COMMANDS:
        real = shutil.which(cmd)
        if real is None:
            raise SystemExit(f"bench: {cmd} not on PATH (is the testbed's SLURM installed?)")
        path = shims / cmd
        path.write_text(shim(real, workdir / f"calls.{cmd}"))
        path.chmod(0o755)
        out[cmd] = path
    return out


def slurm_calls(workdir: Path) -> dict[str, int]:
    counts = {}
    for cmd in SLURM_COMMANDS:
        try:
            counts[cmd] = len((workdir / f"calls.{cmd}").read_text().splitlines())
        except FileNotFoundError:
            counts[cmd] = 0
    return counts


def pod(name: str, namespace: str, node: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            # No service-account token: the testbed's singularity stand-in cannot create the
            # /var/run/secrets/... bind point inside its read-only "image" (reported to the testbed).
            "spec": {"nodeName": node, "restartPolicy": "Never", "tolerations": [TOLERATION],
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "main", "image": "busybox", "command": command,
                                     "resources": {"requests": {"cpu": "1", "memory": "256Mi"}}}]}}


class DoneWatch(PodWatch):
    """Also records when each pod reached Succeeded/Failed."""

    def __init__(self, kube: KubeClient, namespace: str, times: PodTimes) -> None:
        super().__init__(kube, namespace, times)
        self.finished: dict[str, tuple[float, str]] = {}

    def _record(self, etype: str, obj: dict[str, Any]) -> None:
        super()._record(etype, obj)
        phase = (obj.get("status") or {}).get("phase")
        name = (obj.get("metadata") or {}).get("name")
        if name and phase in ("Succeeded", "Failed"):
            self.finished.setdefault(name, (time.time(), phase))


async def run_all(info: dict[str, Any], out: Path, log: Callable[[str], None],
                  pods: int = RUN_PODS) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="vns-", dir="/tmp"))
    shims = write_shims(workdir)
    data_root = workdir / "jobs"
    data_root.mkdir()
    plugin_socket = workdir / "slurm.sock"
    slurm_config = {
        "Socket": f"unix://{plugin_socket}", "DataRootFolder": f"{data_root}/",
        "SbatchPath": str(shims["sbatch"]), "ScancelPath": str(shims["scancel"]),
        "SqueuePath": str(shims["squeue"]), "SacctPath": str(shims["sacct"]), "SinfoPath": str(shims["sinfo"]),
        "SingularityPath": info["singularity"], "ImagePrefix": "docker://", "BashPath": "/bin/bash",
    }
    (workdir / "SlurmConfig.yaml").write_text(yaml.safe_dump(slurm_config))
    env = {**os.environ, **info["env"]}
    plugin = Proc("vnode-slurm-plugin", [sys.executable, "-m", "vnode.plugins.slurm.cli", "--config",
                                         str(workdir / "SlurmConfig.yaml")], workdir / "plugin.log", env=env, cwd=REPO)
    node = f"bench-slurm-{secrets.token_hex(3)}"
    agent = VnodeAgent(workdir, info, f"unix://{plugin_socket}", node, {})
    kube = await KubeClient.connect(info["kubeconfig"], qps=5000, burst=5000, max_connections=64)
    result: dict[str, Any] = {"runs": [], "logs": None, "plugin_config": slurm_config}
    try:
        plugin.start()
        deadline = time.monotonic() + 30
        while not plugin_socket.exists():
            if not plugin.alive() or time.monotonic() > deadline:
                raise SystemExit(f"bench: the SLURM plugin did not start:\n{plugin.tail()}")
            await asyncio.sleep(0.1)
        agent.start()
        await wait_node_ready(kube, node, agent.proc)
        log(f"slurm: agent Ready as {node}, plugin pid {plugin.pid}")
        result["runs"].append(await _short_pods(kube, node, workdir, log, pods))
        result["logs"] = await _logs(kube, node, info, log)
    finally:
        agent.proc.stop()
        plugin.stop()
        await cleanup_node(kube, node)
        await kube.close()
        # Keep the logs with the results; drop the job directories (the 100 MB log among them).
        for log_file in (agent.proc.log_path, plugin.log_path):
            with contextlib.suppress(OSError):
                shutil.copy(log_file, out / f"slurm-{log_file.name}")
        shutil.rmtree(workdir, ignore_errors=True)
    (out / "slurm.json").write_text(json.dumps(result, indent=1))
    return result


async def _namespace(kube: KubeClient, prefix: str) -> str:
    ns = f"{prefix}-{secrets.token_hex(3)}"
    await kube.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await _wait_default_sa(kube, ns)
    return ns


async def _short_pods(kube: KubeClient, node: str, workdir: Path, log: Callable[[str], None],
                      count: int) -> dict[str, Any]:
    ns = await _namespace(kube, "bench-slurm")
    times = PodTimes()
    watch = DoneWatch(kube, ns, times)
    await watch.start()
    before = slurm_calls(workdir)
    names = [f"s-{i:04d}" for i in range(count)]
    sem = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with sem:
            times.created_sent[name] = time.time()
            await kube.post(f"/api/v1/namespaces/{ns}/pods", pod(name, ns, node, ["echo", f"hello from {name}"]))
            times.created_ack[name] = time.time()

    try:
        log(f"slurm: creating {count} short pods in {ns}")
        await asyncio.gather(*(create(n) for n in names))
        first = min(times.created_sent.values())
        ok = await watch.wait(lambda: len(watch.finished) >= count, TIMEOUT)
        after = slurm_calls(workdir)
        done_at = {n: t for n, (t, _) in watch.finished.items()}
        lat = latencies(times.created_ack, done_at)
        phases = [p for _, p in watch.finished.values()]
        run = {"label": "vnode agent + vnode SLURM plugin", "pods": count,
               "succeeded": phases.count("Succeeded"), "failed": phases.count("Failed"),
               "all_done_s": (max(done_at.values()) - first) if ok else None,
               "done_p50": percentile(lat, 50), "done_p99": percentile(lat, 99),
               "slurm_calls": {k: after[k] - before[k] for k in after},
               "notes": [] if ok else [f"only {len(watch.finished)}/{count} pods finished in {TIMEOUT:.0f}s"]}
        log(f"slurm: {run['succeeded']} Succeeded, {run['failed']} Failed in {run['all_done_s']}s; calls {run['slurm_calls']}")
        return run
    finally:
        await watch.stop()
        with contextlib.suppress(KubeError):
            await kube.delete(f"/api/v1/namespaces/{ns}")


async def _wait_phase(kube: KubeClient, ns: str, name: str, phases: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KubeError):
            obj = await kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            phase = (obj.get("status") or {}).get("phase", "")
            if phase in phases:
                return str(phase)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"pod {ns}/{name} not in {phases} after {timeout:.0f}s")


def follow_split(lines: list[tuple[float, float]], launched: float) -> dict[str, Any]:
    """Follow latency counts only lines the pod printed after kubectl's stream was up (after the
    first line reached kubectl): earlier ones were already in the file when kubectl attached, and
    their age says how long attaching took (pod Running seen late, kubectl start, authn), not how
    fast a followed line travels. Both are kept: the attach time and the history count."""
    if not lines:
        return {"follow_latencies": [], "follow_history_lines": 0, "follow_attach_s": None,
                "follow_latencies_all": []}
    first_received = lines[0][1]
    followed = [received - printed for printed, received in lines if printed > first_received]
    return {"follow_latencies": followed, "follow_history_lines": len(lines) - len(followed),
            "follow_attach_s": first_received - launched,
            "follow_latencies_all": [received - printed for printed, received in lines]}


async def _logs(kube: KubeClient, node: str, info: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    ns = await _namespace(kube, "bench-logs")
    kubectl = [info["kubectl"], f"--kubeconfig={info['kubeconfig']}", "-n", ns]
    res: dict[str, Any] = {"notes": []}
    ticker = ("import time,sys\n"
              f"for i in range({LOG_LINES}):\n"
              "    print('%.6f' % time.time(), flush=True)\n"
              f"    time.sleep({LOG_LINE_PERIOD})\n")
    big = ("import sys\nline = 'x' * 99 + '\\n'\nblock = line * 10000\n"
           f"for _ in range({LOG_BYTES // 1_000_000}):\n    sys.stdout.write(block)\nsys.stdout.flush()\n")
    try:
        await kube.post(f"/api/v1/namespaces/{ns}/pods", pod("ticker", ns, node, ["python3", "-u", "-c", ticker]))
        await kube.post(f"/api/v1/namespaces/{ns}/pods", pod("big", ns, node, ["python3", "-c", big]))
        await _wait_phase(kube, ns, "ticker", ("Running", "Succeeded", "Failed"), 300)
        log("slurm: following the ticker pod's log")
        launched = time.time()
        proc = await asyncio.create_subprocess_exec(*kubectl, "logs", "-f", "ticker", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        lines: list[tuple[float, float]] = []  # (printed by the pod, received by kubectl's reader)
        try:
            async with asyncio.timeout(LOG_LINES * LOG_LINE_PERIOD + 120):
                async for raw in proc.stdout:
                    now = time.time()
                    with contextlib.suppress(ValueError):
                        lines.append((float(raw.decode().strip()), now))
        except TimeoutError:
            res["notes"].append("kubectl logs -f did not end with the container")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        res.update(follow_split(lines, launched))
        res["follow_lines_received"] = len(lines)
        if res["follow_history_lines"]:
            res["notes"].append(f"{res['follow_history_lines']} lines written before `kubectl logs -f` delivered its "
                                f"first line ({res['follow_attach_s']:.2f} s after it started) are history, not "
                                "follow latency; not counted")
        log(f"slurm: {len(lines)} lines followed; p50 {percentile(res['follow_latencies'], 50):.2f}s")

        phase = await _wait_phase(kube, ns, "big", ("Succeeded", "Failed"), 600)
        if phase != "Succeeded":
            res["notes"].append(f"the 100 MB pod ended {phase}")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*kubectl, "logs", "big", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        total = 0
        while chunk := await proc.stdout.read(1 << 20):
            total += len(chunk)
        err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
        await proc.wait()
        res["full_seconds"] = time.monotonic() - started
        res["full_bytes"] = total
        # The plugin puts the job's own banner lines (job.out) before the container's output.
        if proc.returncode != 0 or total < LOG_BYTES:
            res["notes"].append(f"kubectl logs exited {proc.returncode} after {total} bytes: {err.strip()[:300]}")
        log(f"slurm: read {total / 1e6:.1f} MB of log in {res['full_seconds']:.1f}s")
    finally:
        with contextlib.suppress(KubeError):
            await kube.delete(f"/api/v1/namespaces/{ns}")
    return res


"""`make bench`: burst benchmarks of vnode's agent (and interLink's VK + API when they can be
built here) on the same stub plugin, then the real-SLURM run; results to bench/results/<stamp>/
and BENCHMARKS.md via bench.report.

    python -m bench.run [--sizes 100,1000,5000] [--running-after 0] [--bind direct|scheduler]
                        [--skip-slurm] [--skip-burst] [--out DIR]

Needs the testbed (`hack/testbed up`, reused if running). Not part of the test suite: nothing here
passes or fails on a number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from vnode.kube.client import KubeClient
from vnode.kube.errors import KubeError

from . import burst
from .procs import Proc, Sampler

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STATUS_PERIOD = 5.0  # both implementations' default status period (interLink: fixed 5 s)
NODE_READY_TIMEOUT = 120.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def testbed_info() -> dict[str, Any]:
    up = subprocess.run([str(REPO / "hack" / "testbed"), "up"], capture_output=True, text=True, check=False)
    if up.returncode != 0:
        raise SystemExit(f"bench: the testbed did not come up:\n{up.stderr[-3000:]}")
    env = subprocess.run([str(REPO / "hack" / "testbed"), "env", "--json"], capture_output=True, text=True,
                         check=True)
    return dict(json.loads(env.stdout))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


def versions(info: dict[str, Any]) -> dict[str, Any]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except OSError:
            return "?"

    commit = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "vnode", "plugin_client", "bench"]))
    return {"vnode_commit": commit + ("+local changes" if dirty else ""), "kubernetes": info["k8s_version"],
            "etcd": info.get("etcd_version"), "go": out(["go", "env", "GOVERSION"]),
            "slurm": out(["sinfo", "--version"])}


class StubPlugin:
    def __init__(self, workdir: Path, running_after: float) -> None:
        self.socket = workdir / "stub.sock"
        self.proc = Proc("stub-plugin", [sys.executable, "-m", "bench.stubplugin", "--listen", f"unix://{self.socket}",
                                         "--running-after", str(running_after)], workdir / "stub-plugin.log", cwd=REPO)

    async def start(self) -> None:
        self.proc.start()
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if not self.proc.alive() or time.monotonic() > deadline:
                raise SystemExit(f"bench: the stub plugin did not start:\n{self.proc.tail()}")
            await asyncio.sleep(0.1)

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket))) as s:
            return await burst.fetch_json(s, "http://stub/bench/stats")


class VnodeAgent:
    """The agent under test: bench.agent (= `vnode run` + a counters file)."""

    impl = "vnode"

    def __init__(self, workdir: Path, info: dict[str, Any], plugin_url: str, node: str,
                 extra: dict[str, Any], profile: Path | None = None) -> None:
        self.node = node
        self.stats_file = workdir / "agent-stats.json"
        config = {"InterlinkURL": plugin_url, "KubeletPort": free_port(), "DisableCSR": True,
                  "KubeletCertDir": str(workdir / "certs"), "StatusPeriodSeconds": STATUS_PERIOD, **extra}
        cfg = workdir / "vnode.yaml"
        cfg.write_text(yaml.safe_dump(config))
        env = {**os.environ, "KUBECONFIG": info["kubeconfig"], "POD_IP": "127.0.0.1"}
        self.proc = Proc("vnode-agent", [sys.executable, "-m", "bench.agent", "--config", str(cfg), "--nodename", node,
                                         "--stats-file", str(self.stats_file),
                                         *(["--profile", str(profile)] if profile else [])],
                          workdir / "agent.log", env=env, cwd=REPO)
        self.config = config

    def start(self) -> None:
        self.proc.start()

    def counters(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.stats_file.read_text()))
        except (OSError, ValueError):
            return {}


async def wait_node_ready(kube: KubeClient, node: str, proc: Proc) -> None:
    deadline = time.monotonic() + NODE_READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"bench: {proc.name} exited:\n{proc.tail()}")
        with contextlib.suppress(KubeError):
            obj = await kube.get(f"/api/v1/nodes/{node}")
            conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                return
        await asyncio.sleep(0.5)
    raise SystemExit(f"bench: node {node} not Ready after {NODE_READY_TIMEOUT:.0f}s:\n{proc.tail()}")


async def cleanup_node(kube: KubeClient, node: str) -> None:
    with contextlib.suppress(KubeError):
        await kube.delete(f"/api/v1/nodes/{node}")
    with contextlib.suppress(KubeError):
        await kube.request("DELETE", "/api/v1/namespaces/kube-node-lease/configmaps",
                           query={"labelSelector": f"vnode.dev/node={node}"})


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`label` or `label:Key=value,Key=value` (values parsed as YAML scalars) → (label, config)."""
    label, _, rest = text.partition(":")
    config: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench: --variant {text!r}: {item!r} is not Key=value")
        config[key.strip()] = yaml.safe_load(value)
    return label or "defaults", config


async def bursts_vnode(info: dict[str, Any], sizes: list[int], args: argparse.Namespace,
                       out: Path, variant: str = "defaults") -> list[dict[str, Any]]:
    label, extra = parse_variant(variant)
    impl = "vnode" if label == "defaults" else f"vnode-{label}"
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="vnb-", dir="/tmp"))
    stub = StubPlugin(workdir, args.running_after)
    node = f"bench-vnode-{secrets.token_hex(3)}"
    profile = out / f"profile-{impl}.txt" if args.profile else None
    agent = VnodeAgent(workdir, info, f"unix://{stub.socket}", node, extra, profile)
    # The load generator's own client: high limits, it must never be the bottleneck.
    kube = await KubeClient.connect(info["kubeconfig"], qps=5000, burst=5000, max_connections=64)
    try:
        await stub.start()
        agent.start()
        await wait_node_ready(kube, node, agent.proc)
        sampler = Sampler(agent.proc.pid).start()
        log(f"vnode agent pid {agent.proc.pid} Ready as node {node}; RSS {sampler.peak_kib / 1024:.0f} MiB")
        for n in sizes:
            result = await burst.run_burst(
                kube=kube, impl=impl, node=node, n=n, bind=args.bind, running_after=args.running_after,
                status_period=STATUS_PERIOD, sampler=sampler, agent_counters=agent.counters,
                plugin_stats=stub.stats, timeout=max(300.0, n * 0.5), log=log)
            stats = agent.counters()
            row = {**result.to_json(), "agent_config": extra, "agent_settings": stats.get("settings"),
                   "agent_source": stats.get("source_digest")}
            results.append(row)
            (out / f"burst-{impl}-{n}.json").write_text(json.dumps(row, indent=1))
            log(f"{impl} {n}: all Running {row['create_to_all_running_s']}s after first create "
                f"({row['last_create_to_all_running_s']}s after last), p50/p99 {row['latency_ack_p50']:.2f}/"
                f"{row['latency_ack_p99']:.2f}s, delete {row['delete_all_s']}s, cpu {row['cpu_total_s']}s, "
                f"rss {row['peak_rss_mib']} MiB, status calls/cycle {row['status_calls_per_cycle']}")
        await sampler.stop()
    finally:
        agent.proc.stop()
        stub.proc.stop()
        await cleanup_node(kube, node)
        await kube.close()
        for log_file in (agent.proc.log_path, stub.proc.log_path):  # logs go with the results
            with contextlib.suppress(OSError):
                shutil.copy(log_file, out / f"{impl}-{log_file.name}")
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def interlink_binaries() -> tuple[Path | None, str]:
    """hack/interlink/build: the bin dir, or None and the reason it could not be built."""
    proc = subprocess.run([str(REPO / "hack" / "interlink" / "build")], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return Path(proc.stdout.strip()), ""
    return None, proc.stderr.strip()


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM/SIGINT cancel the run, so every `finally` stops the processes it started.
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) if args.out else RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    info = testbed_info()
    meta: dict[str, Any] = {"started": stamp, "command": " ".join(["python", "-m", "bench.run", *sys.argv[1:]]),
                            "machine": machine(), "versions": versions(info), "bind": args.bind,
                            "running_after": args.running_after, "status_period": STATUS_PERIOD}
    bin_dir, why = interlink_binaries()
    meta["interlink"] = {"built": bin_dir is not None, "bin_dir": str(bin_dir or ""), "reason": why}
    if bin_dir is None:
        log("interLink's VK + API could not be built here; running vnode alone. Reason:\n" + why)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    if not args.skip_burst:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        for variant in args.variant or ["defaults"]:
            await bursts_vnode(info, sizes, args, out, variant)
        if bin_dir is not None:
            log("interLink binaries exist, but the interLink side of the burst run is not wired yet")
    if not args.skip_slurm:
        from . import slurm_e2e
        await slurm_e2e.run_all(info, out, log, pods=args.slurm_pods)
    if args.no_report:
        log(f"results in {out} (BENCHMARKS.md left alone: --no-report)")
        return 0
    from . import report
    report.write(out)
    log(f"results in {out}; BENCHMARKS.md updated")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000,5000")
    p.add_argument("--running-after", type=float, default=0.0, help="stub: seconds from create to Running")
    p.add_argument("--bind", choices=("direct", "scheduler"), default="direct")
    p.add_argument("--variant", action="append",
                   help="agent settings to run the bursts with: `label:Key=value,...` (repeatable; default: defaults)")
    p.add_argument("--profile", action="store_true", help="profile the agent with pyinstrument (profile-*.txt/html)")
    p.add_argument("--skip-slurm", action="store_true")
    p.add_argument("--slurm-pods", type=int, default=200, help="short pods in the real-SLURM run")
    p.add_argument("--skip-burst", action="store_true")
    p.add_argument("--out")
    p.add_argument("--no-report", action="store_true", help="keep BENCHMARKS.md and bench/plots as they are")
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

"""vnode's agent for benchmarks: exactly `vnode run` (same settings loader, same App), plus a
counters file the benchmark reads.

    python -m bench.agent --config vnode.yaml --nodename bench-1 --stats-file /tmp/agent-stats.json

The file is replaced atomically every STATS_PERIOD seconds and at exit, with the agent's own
counts: apiserver requests sent (every verb, including watches), plugin /status calls, creates,
deletes, status patches. The apiserver has no per-client request counter, so the agent's own
count is what "API requests issued" means here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from vnode.app import App
from vnode.cli import setup_logging
from vnode.settings import ConfigError, Settings, load_settings

STATS_PERIOD = 0.5  # seconds; finer than any phase of a scenario


def source_digest() -> str:
    """A digest of the vnode and plugin_client sources this process imported, so a report can
    tell whether two runs measured the same code (the checkout is shared and changes)."""
    import plugin_client
    import vnode

    digest = hashlib.sha256()
    for package in (vnode, plugin_client):
        root = Path(str(package.__file__)).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings that shape a burst, after defaults were applied."""
    return {"KubeAPIQPS": settings.kube.qps, "KubeAPIBurst": settings.kube.burst,
            "PodWorkers": settings.pods.workers, "StatusPeriodSeconds": settings.pods.status_period,
            "StatusBatchSize": settings.pods.status_batch_size}


def counters(app: App) -> dict[str, Any]:
    agent = app.agent
    if agent is None:
        return {}
    return {"kube_requests": agent.kube.requests_sent, "plugin_status_calls": agent.pods.status_calls,
            "creates": agent.pods.creates, "deletes": agent.pods.deletes,
            "status_patches": agent.pods.status_patches}


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def run(app: App, stats_file: Path, profile: Path | None = None) -> int:
    static = {"source_digest": source_digest(), "settings": effective_settings(app.settings)}

    async def dump() -> None:
        while True:
            write_atomically(stats_file, {**counters(app), **static})
            await asyncio.sleep(STATS_PERIOD)

    dumper = asyncio.ensure_future(dump())
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler  # the bench extra; only needed with --profile

        # Whole-thread sampling: time in the event loop's select shows up as idle, the rest is
        # where the agent's CPU goes.
        profiler = Profiler(interval=0.002, async_mode="disabled")
        profiler.start()
    try:
        return await app.run()
    finally:
        dumper.cancel()
        write_atomically(stats_file, {**counters(app), **static})
        if profiler is not None and profile is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
            profile.with_suffix(".html").write_text(profiler.output_html())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.agent")
    p.add_argument("--config", required=True)
    p.add_argument("--nodename", required=True)
    p.add_argument("--stats-file", required=True, type=Path)
    p.add_argument("--profile", type=Path, help="write a pyinstrument profile of the whole run here (text + .html)")
    args = p.parse_args(argv)
    try:
        settings = load_settings(args.config, nodename=args.nodename)
    except ConfigError as err:
        print(f"bench.agent: {err}", file=sys.stderr)
        return 2
    setup_logging(settings.logging, None)  # as `vnode run` does (text unless VNODE_LOG_FORMAT says json)
    return asyncio.run(run(App(settings), args.stats_file, args.profile))


if __name__ == "__main__":
    raise SystemExit(main())

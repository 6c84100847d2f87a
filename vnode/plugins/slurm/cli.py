"""`vnode-slurm-plugin`: run the SLURM plugin server.

    vnode-slurm-plugin --config SlurmConfig.yaml       (or SLURMCONFIGPATH=..., as the Go plugin)

The Go plugin's flags `-SlurmConfigpath`, `-verbose` and `-errorsonly` are accepted too. A bad
configuration exits with status 2 and one line naming the key. SIGTERM/SIGINT stop the server
after in-flight creates and deletes finish; the unix socket file is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from plugin_client.logformat import FORMATS, configure_logging, format_from, level_for
from plugin_client.server import make_app, start_server
from plugin_client.tracing import TracingConfigError, setup_tracing

from .config import ConfigError, SlurmConfig, load_config
from .metrics import PluginMetrics, listen_url
from .service import SlurmPlugin

log = logging.getLogger("vnode.plugins.slurm")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnode-slurm-plugin", description="interLink-compatible SLURM plugin of vnode")
    p.add_argument("--config", "-SlurmConfigpath", "--SlurmConfigpath", dest="config",
                   help="SlurmConfig.yaml (default: $SLURMCONFIGPATH, else /etc/interlink/SlurmConfig.yaml)")
    p.add_argument("--verbose", "-verbose", action="store_true", help="debug logging")
    p.add_argument("--errorsonly", "-errorsonly", action="store_true", help="log errors only")
    p.add_argument("--log-format", choices=FORMATS, default=None,
                   help="text (default) or json: one object per line with pod, job and trace ids (env VNODE_LOG_FORMAT)")
    return p


def listen_addresses(config: SlurmConfig, host: str = "0.0.0.0") -> list[str]:
    """`Socket: unix:///path` wins over SidecarPort, as in the Go plugin (which listens on all
    interfaces: `:port`)."""
    if config.socket_path:
        return [f"unix://{config.socket_path}"]
    return [f"http://{host}:{config.sidecar_port}"]


async def serve(config: SlurmConfig, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    plugin = SlurmPlugin(config)
    await plugin.start()
    metrics = PluginMetrics(plugin.job_states)
    plugin.cli.observer = metrics.observe_command
    app = make_app(plugin)
    app.middlewares.insert(0, metrics.middleware)  # outermost: sees the status the error middleware chose
    server = await start_server(app, listen_addresses(config))
    metrics_server = None
    if config.metrics_address:
        try:
            metrics_server = await start_server(metrics.app(), [listen_url(config.metrics_address)])
        except BaseException:
            await server.close()
            raise
        log.info("Prometheus metrics on %s/metrics", metrics_server.urls[0])
    if not config.socket_path:
        log.warning("listening on TCP port %s of every interface, without authentication: whoever reaches it can "
                    "run jobs as this user. Prefer `Socket: unix:///...`.", config.sidecar_port)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await server.close()
        if metrics_server is not None:
            await metrics_server.close()
        await plugin.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config, warnings = load_config(args.config, os.environ)
    except ConfigError as e:
        print(f"vnode-slurm-plugin: configuration error: {e}", file=sys.stderr)
        return 2
    verbose = args.verbose or (config.verbose_logging and not args.errorsonly)
    quiet = args.errorsonly or (config.errors_only_logging and not verbose)
    try:
        configure_logging(level_for(verbose, quiet), format_from(os.environ, args.log_format))
    except ValueError as e:
        print(f"vnode-slurm-plugin: configuration error: VNODE_LOG_FORMAT: {e}", file=sys.stderr)
        return 2
    for w in warnings:
        log.warning("config: %s", w)
    try:
        # Off unless the standard OTEL_* variables turn it on (plugin_client.tracing).
        tracing = setup_tracing("vnode-slurm-plugin")
    except TracingConfigError as e:
        print(f"vnode-slurm-plugin: configuration error: {e}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"vnode-slurm-plugin: cannot listen: {e}", file=sys.stderr)
        return 1
    finally:
        if tracing is not None:
            tracing.shutdown()  # flushes the spans still batched
    return 0


if __name__ == "__main__":
    sys.exit(main())

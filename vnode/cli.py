"""`vnode run --config vnode.yaml [--nodename N]`: the agent's command line.

Exit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 when the agent failed at run time, 2 for an
invalid configuration (one line on stderr naming the key and the problem; no traceback).
interLink's VK flags `-nodename` and `-configpath` are accepted too, so its manifests keep working.

Logs go to stderr as text or JSON lines (`--log-format`, else `VNODE_LOG_FORMAT`, else text) at the
level of interLink's `VerboseLogging` / `ErrorsOnlyLogging` keys. `vnode run` turns OpenTelemetry
tracing on when the standard `OTEL_*` variables ask for it (plugin_client.tracing) and flushes the
spans at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from plugin_client.logformat import FORMATS, configure_logging, format_from, level_for
from plugin_client.tracing import TracingConfigError, setup_tracing
from vnode import __version__
from vnode.settings import ConfigError, LogSettings, Settings, load_settings

EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vnode", description="A virtual kubelet for HPC backends.")
    top.add_argument("--version", action="version", version=f"vnode {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the node agent")
    check = sub.add_parser("check-config", help="validate the configuration and print it")
    for p in (run, check):
        p.add_argument("--config", "--configpath", "-configpath", dest="config",
                       help="config file (default: $CONFIGPATH, else /etc/interlink/InterLinkConfig.yaml)")
        p.add_argument("--nodename", "-nodename", dest="nodename",
                       help="node name (default: $NODENAME)")
        p.add_argument("--log-format", dest="log_format", choices=FORMATS,
                       help="log lines as text or JSON objects (default: $VNODE_LOG_FORMAT, else text)")
    return top


def log_level(settings: LogSettings) -> int:
    """interLink's VerboseLogging (DEBUG) / ErrorsOnlyLogging (ERROR) keys, else INFO."""
    return level_for(settings.verbose, settings.errors_only)


def setup_logging(settings: LogSettings, log_format: str | None) -> None:
    configure_logging(log_level(settings), format_from(os.environ, log_format))
    # Python warnings (deprecations in libraries) become log lines: stderr stays one format.
    logging.captureWarnings(True)
    if not settings.verbose:
        # aiohttp's access/client chatter is noise at INFO.
        logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, nodename=args.nodename)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fmt = format_from(os.environ, args.log_format)
    if fmt not in FORMATS:
        print(f"vnode: VNODE_LOG_FORMAT: {fmt!r} is not one of {', '.join(FORMATS)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = _load(args)
    except ConfigError as err:
        print(f"vnode: {err}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.logging, fmt)
    log = logging.getLogger("vnode")
    for warning in settings.warnings:
        log.warning("%s", warning)
    if args.command == "check-config":
        print(f"config {settings.config_path} is valid for node {settings.node.name}")
        print(f"plugin: {settings.plugin.endpoint} ({settings.plugin.dialect} dialect)")
        return 0
    from vnode.app import (
        App,  # imported late: config errors must not pay for aiohttp & co.
    )
    from vnode.kube.kubeconfig import KubeconfigError

    try:
        tracer_provider: Any = setup_tracing("vnode")
    except TracingConfigError as err:
        print(f"vnode: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(App(settings).run())
    except KubeconfigError as err:
        print(f"vnode: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans still queued (the loop has ended)


if __name__ == "__main__":
    sys.exit(main())

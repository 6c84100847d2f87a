"""`vnode run --config vnode.yaml [--nodename N]`: the agent's command line.

Exit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 when the agent failed at run time, 2 for an
invalid configuration (one line on stderr naming the key and the problem; no traceback).
interLink's VK flags `-nodename` and `-configpath` are accepted too, so its manifests keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

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
    return top


def configure_logging(settings: LogSettings) -> None:
    level = logging.DEBUG if settings.verbose else logging.ERROR if settings.errors_only else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.verbose:
        # aiohttp's access/client chatter is noise at INFO.
        logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, nodename=args.nodename)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = _load(args)
    except ConfigError as err:
        print(f"vnode: {err}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.logging)
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
        return asyncio.run(App(settings).run())
    except KubeconfigError as err:
        print(f"vnode: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

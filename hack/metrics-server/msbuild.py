"""Build metrics-server from the Go module proxy into the testbed cache, the way hack/helm builds helm.

sigs.k8s.io/metrics-server has no `replace` directives, so a throwaway wrapper module that requires it
at the chosen version builds `sigs.k8s.io/metrics-server/cmd/metrics-server` with exactly the
dependency versions its own go.mod pins. The ldflags are those of its Makefile (version stamps in
k8s.io/client-go/pkg/version, `-w`).

Version: METRICS_SERVER_VERSION if set, else the newest v0.8.x the proxy serves (asked with
`go list -m -versions`). Layout: <cache>/metrics-server-<version>/bin/metrics-server, the wrapper's
go.mod/go.sum in .../wrapper, build.log next to them. <cache> is $VNODE_TESTBED_CACHE or
~/.cache/vnode-testbed. Nothing here is ever committed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODULE = "sigs.k8s.io/metrics-server"
COMMAND = f"{MODULE}/cmd/metrics-server"
SERIES = "v0.8"  # what issue 8 asks for; METRICS_SERVER_VERSION overrides
WRAPPER_MODULE = "example.invalid/vnode-metrics-server"
# As the testbed's Kubernetes build: no toolchain download, no go.work, static binary (CGO off).
GO_ENV = {"GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"}
BUILD_PARALLELISM = "2"  # two cores, shared with the rest of the team's work
_VERSION = re.compile(r"^v0\.\d+\.\d+$")


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_CACHE") or Path.home() / ".cache" / "vnode-testbed")


def version_dir(version: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"metrics-server-{version.removeprefix('v')}"


def binary(version: str, root: Path | None = None) -> Path:
    return version_dir(version, root) / "bin" / "metrics-server"


def newest(versions: list[str], series: str = SERIES) -> str:
    """The newest release of `series` (`v0.8`) among the proxy's versions; pre-releases are skipped."""
    found = [v for v in versions if _VERSION.match(v) and v.startswith(series + ".")]
    if not found:
        raise BuildError(f"the Go module proxy serves no {MODULE} {series}.x release (it has: {' '.join(versions) or 'none'})")
    return max(found, key=lambda v: tuple(int(p) for p in v[1:].split(".")))


def _env() -> dict[str, str]:
    return {**os.environ, **GO_ENV}


def resolve_version() -> str:
    wanted = os.environ.get("METRICS_SERVER_VERSION", "").strip()
    if wanted:
        version = "v" + wanted.removeprefix("v")
        if not _VERSION.match(version):
            raise BuildError(f"METRICS_SERVER_VERSION {wanted!r} is not a release like v0.8.0")
        return version
    proc = subprocess.run(["go", "list", "-m", "-versions", MODULE], capture_output=True, text=True, env=_env(),
                          cwd=cache_root() if cache_root().is_dir() else None, check=False)
    if proc.returncode != 0:
        cached = sorted(cache_root().glob("metrics-server-*/bin/metrics-server"))
        if cached:  # offline: the newest build we already have
            return "v" + cached[-1].parent.parent.name.removeprefix("metrics-server-")
        raise BuildError(f"go list -m -versions {MODULE} failed: {proc.stderr.strip()}")
    return newest(proc.stdout.split()[1:])


def build(version: str) -> Path:
    target = binary(version)
    if target.exists():
        return target
    root = version_dir(version)
    wrapper = root / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions building at once wait for each other
        if target.exists():
            return target
        log_path = root / "build.log"
        started = time.monotonic()
        (wrapper / "go.mod").write_text(f"module {WRAPPER_MODULE}\n\ngo 1.24\n\nrequire {MODULE} {version}\n")
        (wrapper / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{COMMAND}"\n')
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ldflags = (f"-w -X k8s.io/client-go/pkg/version.gitVersion={version} "
                   f"-X k8s.io/client-go/pkg/version.buildDate={stamp}")
        steps = [["go", "mod", "tidy"],
                 ["go", "build", "-p", BUILD_PARALLELISM, "-trimpath", "-ldflags", ldflags, "-o", str(target.parent / "metrics-server.tmp"), COMMAND]]
        with open(log_path, "a") as log:
            for argv in steps:
                log.write(f"$ {' '.join(argv)}\n")
                log.flush()
                proc = subprocess.run(argv, cwd=wrapper, env=_env(), stdout=log, stderr=subprocess.STDOUT, check=False)
                if proc.returncode != 0:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise BuildError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}); {log_path}:\n{tail}")
        os.replace(target.parent / "metrics-server.tmp", target)
        (target.parent / "BUILD-INFO.json").write_text(json.dumps({
            "module": MODULE, "version": version, "go": shutil.which("go"), "built": stamp,
            "build_seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")
    return target


def main(argv: list[str]) -> int:
    try:
        version = resolve_version()
        path = build(version)
    except BuildError as error:
        print(f"hack/metrics-server/build: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0

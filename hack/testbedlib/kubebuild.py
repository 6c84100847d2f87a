"""Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the Go module proxy.

k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at ./staging with `replace`,
which only works inside k/k itself. A throwaway wrapper module therefore requires k8s.io/kubernetes
vX.Y.Z and replaces every staging module with its published v0.Y.Z twin. The replace list is read
from k/k's own go.mod at the tag, never hard-coded. etcd is built in the same wrapper, so it is exactly
the go.etcd.io/etcd/server/v3 version that k/k pins.

Results go to <cache>/<version>/bin with a BUILD-INFO.json; the wrapper's go.mod/go.sum stay next to
it in <cache>/<version>/wrapper, so a rebuild of the same version is reproducible without the network.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .layout import K8S_MINOR, Layout, cache_root

BINARIES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
}
WRAPPER_MODULE = "example.invalid/vnode-testbed-k8s"
# Every go invocation: fail instead of fetching another toolchain, ignore any go.work around us,
# let `go` update go.mod/go.sum as needed, and build static binaries like k/k's release does.
GO_ENV = {"GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"}
BUILD_PARALLELISM = "2"  # the machine has 2 cores shared with other work; -p 2 keeps memory ~2-4 GiB
RESOLVE_TTL = 12 * 3600  # how long a "newest 1.35.x" answer from the proxy is reused without asking again


class BuildError(RuntimeError):
    pass


def _go(args: list[str], cwd: Path, log, timeout: float = 3600) -> str:
    env = {**os.environ, **GO_ENV}
    log.write(f"$ go {' '.join(args)}\n")
    log.flush()
    proc = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log.write(proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` failed (exit {proc.returncode}) in {cwd}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _cached_versions() -> list[str]:
    root = cache_root()
    found = [p.name for p in root.glob(f"{K8S_MINOR}.*") if (p / "bin" / "BUILD-INFO.json").exists()]
    return sorted(found, key=lambda v: int(v.rsplit(".", 1)[1]))


def resolve_version(requested: str | None) -> str:
    """K8S_VERSION if given, else the newest 1.35.x patch the module proxy serves.

    The proxy's answer is cached for RESOLVE_TTL; without the network the newest cached build is used.
    """
    if requested:
        return requested.strip().removeprefix("v")
    memo = cache_root() / f"resolved-{K8S_MINOR}.json"
    try:
        data = json.loads(memo.read_text())
        if time.time() - data["at"] < RESOLVE_TTL:
            return data["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        out = subprocess.run(
            ["go", "list", "-m", "-json", f"k8s.io/kubernetes@v{K8S_MINOR}"],
            cwd="/",
            env={**os.environ, **GO_ENV},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise BuildError(out.stderr.strip())
        version = json.loads(out.stdout)["Version"].removeprefix("v")
    except (OSError, subprocess.TimeoutExpired, BuildError, ValueError, KeyError) as e:
        cached = _cached_versions()
        if not cached:
            raise BuildError(
                f"cannot ask the Go module proxy for the newest k8s.io/kubernetes v{K8S_MINOR}.x: {e}"
            ) from e
        print(f"testbed: module proxy unreachable ({e}); using cached {cached[-1]}", file=sys.stderr)
        return cached[-1]
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"version": version, "at": time.time()}))
    return version


def staging_replaces(kk_gomod: str, version: str) -> dict[str, str]:
    """Map each staging module of k/k's go.mod to its published `v0.<minor>.<patch>` twin.

    Staging modules are those k/k replaces with ./staging/src/... and requires at v0.0.0."""
    twin = "v0." + version.split(".", 1)[1]
    required = re.findall(
        r"^\s*(?:require\s+)?(k8s\.io/[A-Za-z0-9._/-]+)\s+v0\.0\.0\s*(?://.*)?$", kk_gomod, re.MULTILINE
    )
    local = re.findall(r"^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._/-]+)\s+=>\s+\./staging/", kk_gomod, re.MULTILINE)
    mods = set(required) | set(local)
    if not mods:
        raise BuildError("k8s.io/kubernetes go.mod lists no v0.0.0 staging modules; the wrapper recipe needs updating")
    return {m: twin for m in sorted(mods)}


def wrapper_gomod(kk_gomod: str, version: str) -> str:
    """The wrapper's go.mod: k/k's go and godebug lines (same runtime defaults as a release build)."""
    go_line = re.search(r"^go\s+(\S+)\s*$", kk_gomod, re.MULTILINE)
    godebug = re.findall(r"^godebug\s+.+$", kk_gomod, re.MULTILINE)
    lines = [f"module {WRAPPER_MODULE}", "", f"go {go_line.group(1) if go_line else '1.25.0'}", ""]
    lines += godebug + ([""] if godebug else [])
    lines += [f"require k8s.io/kubernetes v{version}", ""]
    lines += ["replace ("] + [f"\t{m} => {m} {v}" for m, v in staging_replaces(kk_gomod, version).items()] + [")", ""]
    return "\n".join(lines)


TOOLS_GO = (
    "//go:build tools\n\n// Package tools pins the commands the testbed builds, so `go mod tidy` keeps their deps.\npackage tools\n\nimport (\n"
    + "".join(f'\t_ "{pkg}"\n' for pkg in BINARIES.values())
    + ")\n"
)


def ldflags(version: str) -> str:
    """Version stamps so `kubectl version` and /version report the real release, as k/k's build does."""
    major, minor, _ = version.split(".")
    stamps = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in stamps.items()]
    return " ".join(flags)


def binaries_complete(layout: Layout) -> bool:
    return (layout.bin_dir / "BUILD-INFO.json").exists() and all((layout.bin_dir / b).exists() for b in BINARIES)


def build_info(layout: Layout) -> dict:
    try:
        return json.loads((layout.bin_dir / "BUILD-INFO.json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_binaries(layout: Layout) -> bool:
    """Build the binaries for layout.k8s_version unless cached. True if a build ran."""
    if binaries_complete(layout):
        return False
    layout.version_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.version_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent `up` waits for our build instead of racing it
        if binaries_complete(layout):
            return False
        _build(layout)
    return True


def _build(layout: Layout) -> None:
    v = layout.k8s_version
    if shutil.which("go") is None:
        raise BuildError("`go` is not on PATH; the testbed builds Kubernetes from the Go module proxy")
    log_path = layout.version_dir / "build.log"
    print(f"testbed: building Kubernetes v{v} + etcd from the Go module proxy (log: {log_path})", file=sys.stderr)
    started = time.monotonic()
    timings: dict[str, float] = {}
    with open(log_path, "w") as log:
        wd = layout.wrapper_dir
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        t = time.monotonic()
        info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@v{v}"], cwd=wd, log=log))
        kk_gomod = Path(info["GoMod"]).read_text()
        (wd / "go.mod").write_text(wrapper_gomod(kk_gomod, v))
        (wd / "tools.go").write_text(TOOLS_GO)
        _go(["mod", "tidy"], cwd=wd, log=log)
        timings["modules"] = time.monotonic() - t
        etcd_version = _go(["list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3"], cwd=wd, log=log).strip()

        tmp = layout.version_dir / "bin.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, pkg in BINARIES.items():
            t = time.monotonic()
            print(f"testbed:   go build {name}", file=sys.stderr)
            flags = ldflags(v) if pkg.startswith("k8s.io/") else "-s -w"
            _go(
                ["build", "-p", BUILD_PARALLELISM, "-trimpath", "-ldflags", flags, "-o", str(tmp / name), pkg],
                cwd=wd,
                log=log,
            )
            timings[name] = time.monotonic() - t
        go_version = _go(["env", "GOVERSION"], cwd=wd, log=log).strip()
        meta = {
            "k8s_version": v,
            "etcd_version": etcd_version.removeprefix("v"),
            "go_version": go_version,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": {k: round(s, 1) for k, s in timings.items()},
            "total_seconds": round(time.monotonic() - started, 1),
        }
        (tmp / "BUILD-INFO.json").write_text(json.dumps(meta, indent=1) + "\n")
        if layout.bin_dir.exists():
            shutil.rmtree(layout.bin_dir)
        tmp.rename(layout.bin_dir)
    print(f"testbed: build finished in {meta['total_seconds']:.0f}s", file=sys.stderr)

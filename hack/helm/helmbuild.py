"""Build `helm` (v3) from the Go module proxy into the testbed cache, the way the Kubernetes binaries are.

helm.sh/helm/v3 has no `replace` directives, so a throwaway wrapper module that requires it at the
chosen version builds `helm.sh/helm/v3/cmd/helm` with exactly the dependency versions helm's own
go.mod pins (minimal version selection with helm as the only requirement). The ldflags are those of
helm's Makefile: the version stamps `helm version` prints, and the Kubernetes version helm assumes
for `.Capabilities` and its deprecation lint, taken from the k8s.io/client-go it was built with.

Layout: <cache>/helm-<version>/bin/helm (+ BUILD-INFO.json), the wrapper's go.mod/go.sum in
<cache>/helm-<version>/wrapper, a build.log next to them. <cache> is $VNODE_TESTBED_CACHE or
~/.cache/vnode-testbed, shared with hack/testbed. Nothing here is ever committed.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MODULE = "helm.sh/helm/v3"
COMMAND = f"{MODULE}/cmd/helm"
WRAPPER_MODULE = "example.invalid/vnode-helm"
# Same environment as the testbed's Kubernetes build: no toolchain download, no go.work, let go
# complete go.mod/go.sum, static binary like helm's release build (CGO_ENABLED=0).
GO_ENV = {"GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"}
BUILD_PARALLELISM = "2"  # two cores, shared with the rest of the team's work
RESOLVE_TTL = 12 * 3600  # reuse the proxy's "newest v3.x" answer this long before asking again
_VERSION = re.compile(r"^v3\.\d+\.\d+$")


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("VNODE_TESTBED_CACHE") or Path.home() / ".cache" / "vnode-testbed")


@dataclass(frozen=True)
class HelmLayout:
    version: str  # "v3.22.0"
    root: Path

    @property
    def version_dir(self) -> Path:
        return self.root / f"helm-{self.version.removeprefix('v')}"

    @property
    def bin_dir(self) -> Path:
        return self.version_dir / "bin"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def wrapper_dir(self) -> Path:
        return self.version_dir / "wrapper"


def normalize_version(text: str) -> str:
    """`3.22.0` or `v3.22.0` → `v3.22.0`; anything else (a v4, a range, garbage) is refused."""
    version = "v" + text.strip().removeprefix("v")
    if not _VERSION.match(version):
        raise BuildError(f"HELM_VERSION {text!r} is not a helm v3 release like v3.22.0")
    return version


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.removeprefix("v").split("."))


def wrapper_gomod(helm_gomod: str, version: str) -> str:
    """The wrapper's go.mod: helm's go and godebug lines (same runtime defaults as its release)."""
    go_line = re.search(r"^go\s+(\S+)\s*$", helm_gomod, re.MULTILINE)
    godebug = re.findall(r"^godebug\s+.+$", helm_gomod, re.MULTILINE)
    lines = [f"module {WRAPPER_MODULE}", "", f"go {go_line.group(1) if go_line else '1.24.0'}", ""]
    lines += godebug + ([""] if godebug else [])
    lines += [f"require {MODULE} {version}", ""]
    return "\n".join(lines)


TOOLS_GO = (
    "//go:build tools\n\n"
    "// Package tools pins helm's command so `go mod tidy` keeps its dependencies.\n"
    f'package tools\n\nimport _ "{COMMAND}"\n'
)


def k8s_version_for(client_go_version: str) -> tuple[str, str]:
    """client-go v0.35.4 → Kubernetes ("1", "35"), as helm's Makefile derives it."""
    match = re.match(r"^v0\.(\d+)\.\d+", client_go_version)
    if not match:
        raise BuildError(f"unexpected k8s.io/client-go version {client_go_version!r}")
    return "1", match.group(1)


def ldflags(version: str, git_commit: str, k8s: tuple[str, str]) -> str:
    major, minor = k8s
    stamps = {
        "internal/version.version": version,
        "internal/version.metadata": "",
        "internal/version.gitCommit": git_commit,
        "internal/version.gitTreeState": "clean",
        "pkg/lint/rules.k8sVersionMajor": major,
        "pkg/lint/rules.k8sVersionMinor": minor,
        "pkg/chartutil.k8sVersionMajor": major,
        "pkg/chartutil.k8sVersionMinor": minor,
    }
    return " ".join(["-s", "-w"] + [f"-X {MODULE}/{k}={v}" for k, v in stamps.items()])


# --- I/O -----------------------------------------------------------------------------------------


def _go(args: list[str], cwd: Path, log: TextIO, timeout: float = 3600) -> str:
    log.write(f"$ go {' '.join(args)}\n")
    log.flush()
    proc = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **GO_ENV}, capture_output=True,
                          text=True, timeout=timeout, check=False)
    log.write(proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` failed (exit {proc.returncode}) in {cwd}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def cached_versions(root: Path) -> list[str]:
    found = [f"v{p.name.removeprefix('helm-')}" for p in root.glob("helm-3.*") if (p / "bin" / "BUILD-INFO.json").exists()]
    return sorted(found, key=version_key)


def resolve_version(requested: str | None, root: Path) -> str:
    """HELM_VERSION if given, else the newest v3.x the module proxy serves (cached RESOLVE_TTL;
    without the network, the newest cached build)."""
    if requested:
        return normalize_version(requested)
    memo = root / "resolved-helm-v3.json"
    try:
        data = json.loads(memo.read_text())
        if time.time() - data["at"] < RESOLVE_TTL:
            return normalize_version(data["version"])
    except (OSError, ValueError, KeyError, BuildError):
        pass
    try:
        # The v3 module path only carries v3.x tags, so @latest is the newest helm 3 release.
        out = subprocess.run(["go", "list", "-m", "-json", f"{MODULE}@latest"], cwd="/",
                             env={**os.environ, **GO_ENV}, capture_output=True, text=True, timeout=120,
                             check=False)
        if out.returncode != 0:
            raise BuildError(out.stderr.strip())
        version = normalize_version(json.loads(out.stdout)["Version"])
    except (OSError, subprocess.TimeoutExpired, BuildError, ValueError, KeyError) as e:
        cached = cached_versions(root)
        if not cached:
            raise BuildError(f"cannot ask the Go module proxy for the newest {MODULE} release: {e}") from None
        print(f"helm: module proxy unreachable ({e}); using cached {cached[-1]}", file=sys.stderr)
        return cached[-1]
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"version": version, "at": time.time()}))
    return version


def is_built(layout: HelmLayout) -> bool:
    return (layout.bin_dir / "BUILD-INFO.json").exists() and os.access(layout.helm, os.X_OK)


def ensure_helm(layout: HelmLayout) -> bool:
    """Build helm unless cached. True if a build ran. Concurrent callers wait on a lock."""
    if is_built(layout):
        return False
    layout.version_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.version_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(layout):
            return False
        _build(layout)
    return True


def _build(layout: HelmLayout) -> None:
    if shutil.which("go") is None:
        raise BuildError("`go` is not on PATH; helm is built from the Go module proxy")
    log_path = layout.version_dir / "build.log"
    print(f"helm: building {MODULE} {layout.version} from the Go module proxy (log: {log_path})", file=sys.stderr)
    started = time.monotonic()
    with open(log_path, "w") as log:
        wd = layout.wrapper_dir
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        info = json.loads(_go(["mod", "download", "-json", f"{MODULE}@{layout.version}"], cwd=wd, log=log))
        (wd / "go.mod").write_text(wrapper_gomod(Path(info["GoMod"]).read_text(), layout.version))
        (wd / "tools.go").write_text(TOOLS_GO)
        _go(["mod", "tidy"], cwd=wd, log=log)
        client_go = _go(["list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"], cwd=wd, log=log).strip()
        k8s = k8s_version_for(client_go)
        commit = str((info.get("Origin") or {}).get("Hash", ""))
        tmp = layout.bin_dir.with_name("bin.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        _go(["build", "-p", BUILD_PARALLELISM, "-trimpath", "-ldflags", ldflags(layout.version, commit, k8s),
             "-o", str(tmp / "helm"), COMMAND], cwd=wd, log=log)
        (tmp / "BUILD-INFO.json").write_text(json.dumps({
            "helm": layout.version, "git_commit": commit, "client_go": client_go,
            "kubernetes_assumed": ".".join(k8s), "go": _go(["env", "GOVERSION"], cwd=wd, log=log).strip(),
            "seconds": round(time.monotonic() - started), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n")
        if layout.bin_dir.exists():
            shutil.rmtree(layout.bin_dir)
        tmp.rename(layout.bin_dir)  # the cache only ever holds a complete bin/
    print(f"helm: built {layout.helm} in {time.monotonic() - started:.0f}s", file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print("usage: hack/helm/build [VERSION]   (default: $HELM_VERSION, else the newest helm v3 on the "
              "Go module proxy)\nprints the directory holding the built `helm`", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    root = cache_root()
    try:
        version = resolve_version(argv[0] if argv else os.environ.get("HELM_VERSION"), root)
        layout = HelmLayout(version, root)
        ensure_helm(layout)
    except BuildError as e:
        print(f"helm: {e}", file=sys.stderr)
        return 1
    print(layout.bin_dir)
    return 0

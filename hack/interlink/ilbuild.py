"""Build the real Go interLink peers from the Go module proxy, pinned, into the testbed cache.

What gets built (one pinned release line, 0.6.x):
  virtual-kubelet, interlink   github.com/interlink-hq/interlink 0.6.2
  interlink-slurm-plugin       github.com/intertwin-eu/interlink-slurm-plugin 0.6.2-pre5
                               (the repository moved to interlink-hq; its go.mod still declares
                               the old module path, so that is the path to ask the proxy for)

interLink's tags are not semver (`0.6.2`, no `v`), so the go command only knows them as
pseudo-versions. interLink's go.mod `replace`s github.com/virtual-kubelet/virtual-kubelet with a
superfly fork, and a `replace` only applies in the main module: `go install module@version`
refuses such modules. So each peer is built in a throwaway wrapper module that requires the peer
and copies the peer's own (non-local) replace directives, read from its go.mod at that version,
never hard-coded. The SLURM plugin gets its own wrapper: sharing one would let minimal version
selection lift its dependencies to interLink's versions, a build nobody ships.

Cache layout (never committed; shared with hack/testbed's cache root):
  <cache>/interlink-<ver>/bin/{virtual-kubelet,interlink,interlink-slurm-plugin,BUILD-INFO.json}
  <cache>/interlink-<ver>/wrapper-<peer>/{go.mod,go.sum,tools.go}   reproducible offline rebuild
  <cache>/interlink-<ver>/build.log
<cache> is $VNODE_TESTBED_CACHE or ~/.cache/vnode-testbed. A second run with the same pins only
reads BUILD-INFO.json. Concurrent runs wait on a lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

# Same go environment as the testbed's Kubernetes build: never fetch another toolchain, ignore any
# go.work around us, let go complete go.mod/go.sum, static binaries like the upstream images.
GO_ENV = {"GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"}
BUILD_PARALLELISM = "2"  # two cores shared with the rest of the team's work
GO_TIMEOUT = 3600.0  # a cold build downloads k8s.io/* and the otel tree; bound a hang, not a build


@dataclass(frozen=True)
class Pin:
    """One Go peer at one version. `ref` is what the proxy is asked for: a pseudo-version when it
    is known exactly, else a commit hash (the proxy resolves it to the pseudo-version)."""

    name: str  # wrapper directory suffix
    module: str
    ref: str
    release: str  # the upstream tag this ref is
    commands: dict[str, str]  # binary name -> main package
    kubelet_version_var: str | None = None  # package.Var stamped with the Kubernetes version


INTERLINK = Pin(
    name="interlink",
    module="github.com/interlink-hq/interlink",  # lower-case: the upper-case repo name is refused
    ref="v0.0.0-20260710084849-84a381055341",  # tag 0.6.2 (commit 84a381055341, 2026-07-10)
    release="0.6.2",
    commands={
        "virtual-kubelet": "github.com/interlink-hq/interlink/cmd/virtual-kubelet",
        "interlink": "github.com/interlink-hq/interlink/cmd/interlink",
    },
    kubelet_version_var="github.com/interlink-hq/interlink/pkg/virtualkubelet.KubeletVersion",
)
SLURM_PLUGIN = Pin(
    name="slurm-plugin",
    module="github.com/intertwin-eu/interlink-slurm-plugin",
    ref="f83c10ac523e",  # tag 0.6.2-pre5, the newest 0.6.x pre-release (2026-04-29)
    release="0.6.2-pre5",
    commands={"interlink-slurm-plugin": "github.com/intertwin-eu/interlink-slurm-plugin/cmd"},
)
PINS = (INTERLINK, SLURM_PLUGIN)

# The replace interLink's go.mod carries at 0.6.2 (tags 0.5.0 and 0.6.2 agree). Only used to
# check what we read from the go.mod the proxy serves: a different fork there is reported, not
# silently overridden.
EXPECTED_REPLACES = {
    INTERLINK.module: {
        "github.com/virtual-kubelet/virtual-kubelet": ("github.com/superfly/virtual-kubelet",
                                                       "v0.0.0-20250426133649-339b787d1205"),
    },
}
DEFAULT_KUBELET_VERSION = "v1.35.4"  # what the testbed runs when it has not resolved a newer 1.35.x
WRAPPER_MODULE = "example.invalid/vnode-interlink-peers"


class BuildError(RuntimeError):
    pass


class ProxyRefused(BuildError):
    """The module proxy answered, and the answer was no (not a timeout)."""

    def __init__(self, pin: Pin, detail: str) -> None:
        self.pin = pin
        self.detail = detail
        super().__init__(f"the Go module proxy refused {pin.module}@{pin.ref} ({pin.release}): {detail}")


# --- pure pieces ---------------------------------------------------------------------------------


def cache_root(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    return Path(env.get("VNODE_TESTBED_CACHE") or Path.home() / ".cache" / "vnode-testbed")


@dataclass(frozen=True)
class Layout:
    root: Path
    release: str = INTERLINK.release

    @property
    def version_dir(self) -> Path:
        return self.root / f"interlink-{self.release}"

    @property
    def bin_dir(self) -> Path:
        return self.version_dir / "bin"

    @property
    def info_path(self) -> Path:
        return self.bin_dir / "BUILD-INFO.json"

    def wrapper_dir(self, pin: Pin) -> Path:
        return self.version_dir / f"wrapper-{pin.name}"


def pin_key(pins: tuple[Pin, ...]) -> list[dict[str, Any]]:
    """What a cached build must have been built from to be reused."""
    return [{"module": p.module, "ref": p.ref, "commands": sorted(p.commands)} for p in pins]


_REPLACE_LINE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+(v\S+))?\s+=>\s+(\S+)(?:\s+(v\S+))?\s*$")


def remote_replaces(gomod: str) -> dict[str, tuple[str, str]]:
    """The `replace old => new version` directives of a go.mod (single lines and blocks) whose
    target is a module, not a local directory (a local path is meaningless outside that repo)."""
    found: dict[str, tuple[str, str]] = {}
    in_block = False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if line.startswith("replace ("):
            in_block = True
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if not (in_block or line.startswith("replace ")):
            continue
        m = _REPLACE_LINE.match(line)
        if m is None:
            raise BuildError(f"cannot parse go.mod replace directive {raw.strip()!r}")
        old, _old_version, new, new_version = m.groups()
        if new.startswith((".", "/")) or new_version is None:
            continue  # local directory replace
        found[old] = (new, new_version)
    return found


def go_directive(gomod: str) -> str:
    m = re.search(r"^go\s+(\S+)\s*$", gomod, re.MULTILINE)
    return m.group(1) if m else "1.22"


def wrapper_gomod(pin: Pin, version: str, upstream_gomod: str) -> str:
    """The wrapper's go.mod: the peer's go line, the peer as the one requirement, its replaces."""
    lines = [f"module {WRAPPER_MODULE}", "", f"go {go_directive(upstream_gomod)}", "",
             f"require {pin.module} {version}", ""]
    for old, (new, new_version) in sorted(remote_replaces(upstream_gomod).items()):
        lines.append(f"replace {old} => {new} {new_version}")
    return "\n".join(lines) + "\n"


def tools_go(pin: Pin) -> str:
    imports = "".join(f'\t_ "{pkg}"\n' for pkg in sorted(pin.commands.values()))
    return ("//go:build tools\n\n// Package tools keeps the peer's main packages (and so their dependencies) in go.mod.\n"
            f"package tools\n\nimport (\n{imports})\n")


def ldflags(pin: Pin, kubelet_version: str) -> str:
    flags = ["-s", "-w"]
    if pin.kubelet_version_var:
        flags.append(f"-X {pin.kubelet_version_var}={kubelet_version}")
    return " ".join(flags)


def check_replaces(pin: Pin, found: dict[str, tuple[str, str]]) -> None:
    expected = EXPECTED_REPLACES.get(pin.module, {})
    for old, target in expected.items():
        if found.get(old) != target:
            raise BuildError(f"{pin.module}@{pin.ref}: go.mod replaces {old} with {found.get(old)}, expected {target}; "
                             "update EXPECTED_REPLACES after checking the new fork")


def kubelet_version(root: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """INTERLINK_KUBELET_VERSION, else the Kubernetes version the testbed resolved, else the default."""
    if env.get("INTERLINK_KUBELET_VERSION"):
        return "v" + env["INTERLINK_KUBELET_VERSION"].removeprefix("v")
    try:
        resolved = json.loads((root / "resolved-1.35.json").read_text())["version"]
        return "v" + str(resolved).removeprefix("v")
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_KUBELET_VERSION


# --- I/O -----------------------------------------------------------------------------------------


def _go(args: list[str], cwd: Path, log: IO[str]) -> subprocess.CompletedProcess[str]:
    log.write(f"$ (cd {cwd} && go {' '.join(args)})\n")
    log.flush()
    proc = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **GO_ENV}, capture_output=True, text=True,
                          timeout=GO_TIMEOUT, check=False)
    log.write(proc.stdout[-20000:] + proc.stderr)
    log.flush()
    return proc


def _go_ok(args: list[str], cwd: Path, log: IO[str]) -> str:
    proc = _go(args, cwd, log)
    if proc.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` failed (exit {proc.returncode}) in {cwd}:\n{proc.stderr[-3000:]}")
    return proc.stdout


@dataclass
class Resolved:
    pin: Pin
    version: str
    gomod: str
    commit: str
    time: str


def resolve(pin: Pin, log: IO[str]) -> Resolved:
    """Ask the proxy for the pin (`go mod download -json`): its exact version and go.mod."""
    with tempfile.TemporaryDirectory(prefix="ilbuild-") as tmp:
        proc = _go(["mod", "download", "-json", f"{pin.module}@{pin.ref}"], Path(tmp), log)
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        raise BuildError(f"`go mod download {pin.module}@{pin.ref}` printed no JSON: {proc.stderr[-2000:]}") from None
    if info.get("Error"):
        detail = str(info["Error"]).split(": ", 1)[-1] if "403" in str(info["Error"]) else str(info["Error"])
        raise ProxyRefused(pin, " ".join(detail.split()))
    origin = info.get("Origin") or {}
    return Resolved(pin, info["Version"], Path(info["GoMod"]).read_text(), str(origin.get("Hash", "")),
                    str(info.get("Time", "")))


def is_built(layout: Layout, pins: tuple[Pin, ...]) -> bool:
    try:
        info = json.loads(layout.info_path.read_text())
    except (OSError, ValueError):
        return False
    names = [name for p in pins for name in p.commands]
    return info.get("pins") == pin_key(pins) and all(os.access(layout.bin_dir / n, os.X_OK) for n in names)


@dataclass
class BuildReport:
    built: bool
    bin_dir: Path
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def ensure_built(layout: Layout, pins: tuple[Pin, ...] = PINS) -> BuildReport:
    """Build unless the cache holds these pins. Every pin is resolved before anything is built, so a
    refusal names every module the proxy will not serve at once."""
    started = time.monotonic()
    if is_built(layout, pins):
        return BuildReport(False, layout.bin_dir, time.monotonic() - started, json.loads(layout.info_path.read_text()))
    if shutil.which("go") is None:
        raise BuildError("`go` is not on PATH; the interLink peers are built from the Go module proxy")
    layout.version_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.version_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(layout, pins):
            return BuildReport(False, layout.bin_dir, time.monotonic() - started,
                               json.loads(layout.info_path.read_text()))
        with open(layout.version_dir / "build.log", "w") as log:
            info = _build(layout, pins, log, started)
    return BuildReport(True, layout.bin_dir, time.monotonic() - started, info)


def _build(layout: Layout, pins: tuple[Pin, ...], log: IO[str], started: float) -> dict[str, Any]:
    resolved, refused = [], []
    for pin in pins:
        try:
            resolved.append(resolve(pin, log))
        except ProxyRefused as e:
            refused.append(e)
    if refused:
        raise BuildError("cannot build the interLink peers from the Go module proxy:\n  "
                         + "\n  ".join(str(e) for e in refused)
                         + f"\n(GOPROXY={_goproxy()}; log: {layout.version_dir / 'build.log'})")
    kv = kubelet_version(layout.root)
    tmp = layout.bin_dir.with_name("bin.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    peers: list[dict[str, Any]] = []
    for r in resolved:
        replaces = remote_replaces(r.gomod)
        check_replaces(r.pin, replaces)
        wd = layout.wrapper_dir(r.pin)
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        (wd / "go.mod").write_text(wrapper_gomod(r.pin, r.version, r.gomod))
        (wd / "tools.go").write_text(tools_go(r.pin))
        t0 = time.monotonic()
        _go_ok(["mod", "tidy"], wd, log)
        for name, pkg in r.pin.commands.items():
            _go_ok(["build", "-p", BUILD_PARALLELISM, "-trimpath", "-ldflags", ldflags(r.pin, kv),
                    "-o", str(tmp / name), pkg], wd, log)
        peers.append({**asdict(r.pin), "version": r.version, "commit": r.commit, "commit_time": r.time,
                      "replaces": {k: list(v) for k, v in replaces.items()},
                      "seconds": round(time.monotonic() - t0, 1)})
    info = {"pins": pin_key(pins), "peers": peers, "kubelet_version": kv,
            "go": _go_ok(["env", "GOVERSION"], layout.root, log).strip(),
            "seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    if layout.bin_dir.exists():
        shutil.rmtree(layout.bin_dir)
    tmp.rename(layout.bin_dir)  # the cache only ever holds a complete bin/
    return info


def _goproxy() -> str:
    try:
        return subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except OSError:
        return "?"


def check(pins: tuple[Pin, ...] = PINS) -> list[dict[str, Any]]:
    """Ask the proxy for every pin without building; one row per pin."""
    rows = []
    with open(os.devnull, "w") as log:
        for pin in pins:
            try:
                r = resolve(pin, log)
                rows.append({"module": pin.module, "ref": pin.ref, "served": True, "version": r.version,
                             "commit": r.commit, "time": r.time})
            except BuildError as e:
                rows.append({"module": pin.module, "ref": pin.ref, "served": False, "error": str(e)})
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hack/interlink/build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only ask the module proxy for each pin; print JSON")
    args = parser.parse_args(argv)
    if args.check:
        rows = check()
        print(json.dumps(rows, indent=2))
        return 0 if all(r["served"] for r in rows) else 1
    layout = Layout(cache_root())
    try:
        report = ensure_built(layout)
    except BuildError as e:
        print(f"interlink: {e}", file=sys.stderr)
        return 1
    what = "built" if report.built else "cached"
    print(f"interlink: {what} in {report.seconds:.1f}s: {', '.join(sorted(os.listdir(report.bin_dir)))}",
          file=sys.stderr)
    print(report.bin_dir)
    return 0

"""Build the Go test peers under tests/interop/ once per source version, outside the tree.

Binaries go to ~/.cache/vnode-tests/<name>-<source hash>/ (never committed). The build uses
the Go module proxy through the ordinary `go` client; modules already in the module cache
(e.g. from the testbed's Kubernetes build) are reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

INTEROP = Path(__file__).parent / "interop"
CACHE = Path(os.environ.get("VNODE_TEST_CACHE", Path.home() / ".cache" / "vnode-tests"))


def go_binary(name: str) -> Path:
    source = INTEROP / name
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + path.read_bytes())
    out_dir = CACHE / f"{name}-{digest.hexdigest()[:16]}"
    binary = out_dir / name
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    result = subprocess.run(
        [go, "build", "-o", str(binary) + ".tmp", "."],
        cwd=source, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{result.stdout}\n{result.stderr}")
    os.replace(str(binary) + ".tmp", binary)
    return binary

"""The agent and plugin images install as their Dockerfiles say. No Docker engine exists here, so
each Dockerfile's COPY steps are replayed into a scratch source directory and its RUN pip steps run,
verbatim but for the /src path, in a fresh venv (no system site-packages, no PYTHONPATH), with pip
fetching from PyPI as the image build would; then the image's entrypoint command must work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.deploy_support import copy_sources, dockerfile_instructions, pip_steps

IMAGES = REPO / "deploy" / "images"
PIP_TIMEOUT = 1200.0  # downloads aiohttp, grpcio, cryptography, kubernetes_asyncio... on a shared machine


def build_like_the_dockerfile(image: str, root: Path) -> Path:
    """Replay COPY into <root>/src, run the pip RUN steps in a venv at <root>/venv; return its bin/."""
    instrs = dockerfile_instructions((IMAGES / image / "Dockerfile").read_text())
    src = root / "src"
    for i in instrs:
        if i.keyword != "COPY":
            continue
        sources, dest = copy_sources(i)
        assert dest.startswith("/src"), f"{image}: COPY to {dest} (this test maps only /src)"
        target = src / dest.removeprefix("/src").lstrip("/")
        for s in sources:
            path = REPO / s
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    venv.EnvBuilder(with_pip=True, clear=True).create(root / "venv")
    bin_dir = root / "venv" / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    steps = pip_steps(instrs)
    assert steps, f"{image}: the Dockerfile has no pip step"
    for step in steps:
        command = re.sub(r"(?<![\w/])/src\b", str(src), step)
        done = subprocess.run(["/bin/sh", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                              timeout=PIP_TIMEOUT, check=False)
        assert done.returncode == 0, f"{image}: `{command}` exited {done.returncode}:\n{done.stderr[-4000:]}"
    assert not src.exists(), f"{image}: the RUN step should remove the sources after installing"
    return bin_dir


def run(bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd="/", env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def imports_from_venv(bin_dir: Path, module: str) -> bool:
    probe = run(bin_dir, "python", "-c", f"import {module}, sys; print({module}.__file__)")
    return probe.returncode == 0


def test_agent_image_installs_the_agent_and_its_command_runs(tmp_path: Path) -> None:
    bin_dir = build_like_the_dockerfile("agent", tmp_path)
    help_ = run(bin_dir, "vnode", "--help")
    assert help_.returncode == 0, help_.stderr
    assert "run" in help_.stdout and "check-config" in help_.stdout
    located = run(bin_dir, "python", "-c", "import vnode; print(vnode.__file__)").stdout
    assert located.startswith(str(tmp_path / "venv")), f"vnode imported from {located}, not the venv"
    # the whole agent imports (kubelet endpoint, SPDY, kube client), not only the CLI
    whole = run(bin_dir, "python", "-c", "import vnode.app, vnode.kubelet.server, vnode.plugins.slurm.cli")
    assert whole.returncode == 0, whole.stderr


def test_plugin_image_installs_the_slurm_plugin_without_the_kubernetes_side(tmp_path: Path) -> None:
    bin_dir = build_like_the_dockerfile("plugin", tmp_path)
    help_ = run(bin_dir, "vnode-slurm-plugin", "--help")
    assert help_.returncode == 0, help_.stderr
    assert "--config" in help_.stdout
    assert not imports_from_venv(bin_dir, "kubernetes_asyncio")
    assert not imports_from_venv(bin_dir, "cryptography")
    # the whole plugin imports: service, metrics, and the OTLP exporter tracing would load
    whole = run(bin_dir, "python", "-c", "import vnode.plugins.slurm.service, vnode.plugins.slurm.metrics, "
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    assert whole.returncode == 0, whole.stderr
    # a missing config is a clean configuration error, not an ImportError from the Kubernetes side
    bad = run(bin_dir, "vnode-slurm-plugin", "--config", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("image", ["agent", "plugin"])
def test_pip_steps_are_the_only_install_steps_of_python_images(image: str) -> None:
    instrs = dockerfile_instructions((IMAGES / image / "Dockerfile").read_text())
    runs = [i.args for i in instrs if i.keyword == "RUN"]
    installs = [r for r in runs if "install" in r and "apt-get" not in r]
    assert installs == pip_steps(instrs)

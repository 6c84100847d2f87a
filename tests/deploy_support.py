"""Helpers for the deploy tests: the helm binary built by hack/helm/build, rendering the chart,
picking objects out of the rendered stream, and reading Dockerfiles."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "deploy" / "helm" / "vnode"
EXAMPLES = REPO / "deploy" / "examples"
MY_VALUES = EXAMPLES / "my-values.yaml"
HELM_BUILD = REPO / "hack" / "helm" / "build"
HELM_BUILD_TIMEOUT = 1800.0  # a cold build compiles helm and client-go (~80 s here); room for a slow CI


@functools.cache
def helm_bin() -> Path:
    """`helm`, built from the Go module proxy on first use and cached like the testbed binaries.
    A build failure fails the test (never skips it)."""
    try:
        proc = subprocess.run([str(HELM_BUILD)], capture_output=True, text=True, timeout=HELM_BUILD_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"hack/helm/build did not finish: {e}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"hack/helm/build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return Path(proc.stdout.strip()) / "helm"


class RenderError(AssertionError):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def helm_template(*values: Path | dict[str, Any], release: str = "vnode-demo", namespace: str = "interlink",
                  tmp_dir: Path | None = None, extra: Iterable[str] = ()) -> str:
    """`helm template` of the chart with values files and/or dicts (later ones win). Raises
    RenderError with helm's message if rendering fails."""
    args = [str(helm_bin()), "template", release, str(CHART), "--namespace", namespace]
    for i, v in enumerate(values):
        if isinstance(v, dict):
            assert tmp_dir is not None, "dict values need tmp_dir"
            path = tmp_dir / f"values-{i}.yaml"
            path.write_text(yaml.safe_dump(v))
            v = path
        args += ["--values", str(v)]
    args += list(extra)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    return proc.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Rendered:
    """The objects of one rendering, with lookups by kind and name."""

    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    def container(self, name: str) -> dict[str, Any]:
        found = [c for c in self.deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        assert found, f"no container {name} in {self.container_names()}"
        return found[0]

    def container_names(self) -> list[str]:
        return [c["name"] for c in self.deployment["spec"]["template"]["spec"]["containers"]]

    def agent_config_text(self) -> str:
        cm = next(o for o in self.all("ConfigMap") if o["metadata"]["name"].endswith("-virtual-kubelet-config"))
        return str(cm["data"]["InterLinkConfig.yaml"])

    def agent_config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.agent_config_text())
        return config

    def mounts(self, container: str) -> dict[str, str]:
        """mountPath -> volume name."""
        return {m["mountPath"]: m["name"] for m in self.container(container).get("volumeMounts", [])}


def render(*values: Path | dict[str, Any], tmp_dir: Path | None = None, **kw: Any) -> Rendered:
    return Rendered(documents(helm_template(*values, tmp_dir=tmp_dir, **kw)))


# --- Dockerfiles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, `\\` continuations joined (shell form)."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction is skipped, as docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip()))
    if pending:
        raise ValueError("Dockerfile ends inside a continued instruction")
    return out


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a shell-form COPY without flags."""
    words = shlex.split(instruction.args)
    if any(w.startswith("--") for w in words):
        raise ValueError(f"COPY flags are not supported here: {instruction.args}")
    return words[:-1], words[-1]


_PIP = re.compile(r"\bpip\b")


def pip_steps(instructions: list[Instruction]) -> list[str]:
    """The shell commands of the RUN instructions that run pip."""
    return [i.args for i in instructions if i.keyword == "RUN" and _PIP.search(i.args)]


# --- processes the deploy integration tests start (always stopped by pid) -------------------------


def free_port() -> int:
    """A TCP port free on loopback right now (bind 0, read, close)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads), from /proc."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def descendant_pids(pid: int) -> list[int]:
    """Every descendant of `pid`, deepest first."""
    out: list[int] = []
    for kid in child_pids(pid):
        out += descendant_pids(kid) + [kid]
    return out


@dataclass
class Proc:
    """A process a test starts, with its output in a log file. stop() sends SIGTERM to the pid it
    started (and, with tree=True, to that pid's children first), then SIGKILL after `grace`."""

    argv: list[str]
    log_path: Path
    env: dict[str, str]
    cwd: Path | None = None
    proc: Any = None  # asyncio.subprocess.Process

    async def start(self) -> Proc:
        import asyncio
        import os

        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=str(self.cwd) if self.cwd else None,
                stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd)
        finally:
            os.close(fd)
        return self

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, *, tree: bool = False, grace: float = 15.0) -> int | None:
        import asyncio
        import os
        import signal

        if not self.running:
            return None if self.proc is None else int(self.proc.returncode)
        if tree:
            for kid in descendant_pids(self.pid):
                try:
                    os.kill(kid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        return int(self.proc.returncode)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


async def wait_for_path(path: Path, proc: Proc, what: str, timeout: float = 60.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if not proc.running:
            raise AssertionError(f"{what} exited ({proc.proc.returncode}) before {path} appeared:\n{proc.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {path} did not appear:\n{proc.log()}")
        await asyncio.sleep(0.1)


def slurm_plugin_config(testbed: Any, socket: Path, data_root: Path) -> str:
    """A SlurmConfig.yaml for the testbed's SLURM and singularity stand-in (Go plugin keys)."""
    bin_dir = testbed.slurm_bin_dir
    return yaml.safe_dump({
        "Socket": f"unix://{socket}",
        "DataRootFolder": f"{data_root}/",
        "SbatchPath": str(bin_dir / "sbatch"),
        "ScancelPath": str(bin_dir / "scancel"),
        "SqueuePath": str(bin_dir / "squeue"),
        "SinfoPath": str(bin_dir / "sinfo"),
        "SacctPath": str(bin_dir / "sacct"),
        "SrunPath": str(bin_dir / "srun"),
        "SingularityPath": str(testbed.singularity),
        "ImagePrefix": "docker://",
        "StatusCacheSeconds": 0.5,
    })


async def start_slurm_plugin(testbed: Any, workdir: Path, socket: Path) -> Proc:
    """`vnode-slurm-plugin --config SlurmConfig.yaml` on `socket` (the "HPC side")."""
    import sys

    config = workdir / "SlurmConfig.yaml"
    (workdir / "jobs").mkdir(parents=True, exist_ok=True)
    config.write_text(slurm_plugin_config(testbed, socket, workdir / "jobs"))
    proc = await Proc([sys.executable, "-m", "vnode.plugins.slurm.cli", "--config", str(config)],
                      workdir / "plugin.log", dict(testbed.env), cwd=REPO).start()
    await wait_for_path(socket, proc, "vnode-slurm-plugin")
    return proc


def ssh_keygen(path: Path, comment: str) -> str:
    """A fresh ed25519 key pair at path / path.pub; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


# --- the agent as the chart's Deployment starts it -------------------------------------------------

CONFIG_IN_POD = "/etc/interlink/InterLinkConfig.yaml"


def agent_command(rendered: Rendered, config: Path, kubeconfig: Path) -> tuple[list[str], dict[str, str]]:
    """The vk container's args and env from the rendered Deployment, with the config file at
    `config`, POD_IP as the downward API would set it (loopback here: the apiserver reaches the
    kubelet port there), and `kubeconfig` instead of the in-cluster ServiceAccount token."""
    import os
    import sys

    vk = rendered.container("vk")
    args = [str(config) if a == CONFIG_IN_POD else a for a in vk["args"]]
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NODENAME", "CONFIGPATH")}
    for var in vk["env"]:
        if "value" in var:
            env[var["name"]] = str(config) if var["value"] == CONFIG_IN_POD else var["value"]
    pod_ip = next(var for var in vk["env"] if var["name"] == "POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    env["POD_IP"] = "127.0.0.1"
    env["KUBECONFIG"] = str(kubeconfig)
    env["PYTHONPATH"] = str(REPO)
    return [sys.executable, "-m", "vnode", *args], env


async def start_chart_agent(rendered: Rendered, workdir: Path, kubeconfig: Path) -> Proc:
    """The agent with the rendered ConfigMap's config, started like the chart's vk container."""
    config = workdir / "InterLinkConfig.yaml"
    config.write_text(rendered.agent_config_text())
    argv, env = agent_command(rendered, config, kubeconfig)
    return await Proc(argv, workdir / "agent.log", env, cwd=workdir).start()


async def kget_one(testbed: Any, *args: str) -> dict[str, Any]:
    """`kubectl get ARGS -o json` of an object that must exist."""
    from tests.agent_support import kget

    obj = await kget(testbed, *args)
    assert obj is not None, f"kubectl get {' '.join(args)}: not found"
    return dict(obj)

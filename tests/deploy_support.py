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

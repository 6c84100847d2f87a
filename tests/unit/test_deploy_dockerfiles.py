"""The image definitions agree with the package and the chart: Python version, console scripts,
sources they copy, the shared uid/gid, the SSH scripts. (Their install steps run for real in
tests/integration/test_deploy_images.py.)"""

from __future__ import annotations

import json
import os
import tomllib

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy_support import (
    CHART,
    Instruction,
    copy_sources,
    dockerfile_instructions,
    pip_steps,
)

IMAGES = REPO / "deploy" / "images"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def instructions(image: str) -> list[Instruction]:
    return dockerfile_instructions((IMAGES / image / "Dockerfile").read_text())


def only(instrs: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in instrs if i.keyword == keyword]


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# c\nFROM x\nRUN a \\\n# inner comment\n && b \\\n && c\nCOPY a b /dst/\n"
    assert dockerfile_instructions(text) == [Instruction("FROM", "x"), Instruction("RUN", "a   && b   && c"),
                                             Instruction("COPY", "a b /dst/")]
    assert copy_sources(Instruction("COPY", "a b /dst/")) == (["a", "b"], "/dst/")
    with pytest.raises(ValueError):
        dockerfile_instructions("RUN a \\\n")


@pytest.mark.parametrize("image", ["agent", "plugin"])
def test_python_images_use_the_python_the_package_requires(image: str) -> None:
    base = only(instructions(image), "FROM")
    assert base == ["python:3.11-slim-bookworm"]
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


@pytest.mark.parametrize(("image", "script"), [("agent", "vnode"), ("plugin", "vnode-slurm-plugin")])
def test_entrypoint_is_the_packages_console_script(image: str, script: str) -> None:
    assert json.loads(only(instructions(image), "ENTRYPOINT")[0]) == [script]
    assert script in PYPROJECT["project"]["scripts"]


@pytest.mark.parametrize("image", ["agent", "plugin"])
def test_copied_sources_exist_and_cover_every_package(image: str) -> None:
    copied = set()
    for args in only(instructions(image), "COPY"):
        sources, _ = copy_sources(Instruction("COPY", args))
        for s in sources:
            assert (REPO / s).exists(), s
            copied.add(s)
    assert {"pyproject.toml", "vnode", "plugin_client"} <= copied
    assert pip_steps(instructions(image)), "no pip step"


@pytest.mark.parametrize("image", ["agent", "plugin"])
def test_images_run_as_the_charts_uid_and_gid(image: str) -> None:
    user = only(instructions(image), "USER")
    assert user == [f"{VALUES['vnode']['runAsUser']}:{VALUES['vnode']['runAsGroup']}"]


def test_bastion_user_shares_the_agents_uid_and_its_scripts_are_copied() -> None:
    instrs = instructions("bastion")
    run = " ".join(only(instrs, "RUN"))
    assert f"--uid {VALUES['vnode']['runAsUser']}" in run and f"--gid {VALUES['vnode']['runAsGroup']}" in run
    assert "openssh-server" in run and "openssh-client" in run
    for args in only(instrs, "COPY"):
        (src,), _ = copy_sources(Instruction("COPY", args))
        assert os.access(IMAGES / "bastion" / src, os.X_OK), src

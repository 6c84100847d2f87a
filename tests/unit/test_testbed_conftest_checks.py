"""The checks tests/conftest.py adds to every test: leaked tasks/processes fail, integration never skips."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

SUBJECT = """
import asyncio, subprocess, pytest

async def test_leaks_a_task():
    asyncio.create_task(asyncio.sleep(100), name="sleeper")

async def test_awaits_its_task():
    await asyncio.create_task(asyncio.sleep(0))

@pytest.fixture
async def background():
    task = asyncio.create_task(asyncio.sleep(100))
    yield task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

async def test_fixture_owned_task_is_fine(background):
    await asyncio.sleep(0)

def test_leaks_a_process():
    subprocess.Popen(["sleep", "100"])

def test_waits_for_its_process():
    subprocess.run(["true"], check=True)

@pytest.mark.integration
def test_integration_that_skips():
    pytest.skip("no testbed here")

@pytest.mark.integration
@pytest.mark.xfail(reason="documented bug", strict=True)
def test_integration_xfail_is_not_a_skip():
    assert False

def test_unit_may_skip():
    pytest.skip("optional tool missing")
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("conftest-subject")
    (root / "tests").mkdir()
    shutil.copy(CONFTEST, root / "tests" / "conftest.py")
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "test_subject.py").write_text(SUBJECT)
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    integration: x\n    slow: x\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=report.xml", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result: dict[str, str] = {}
    for case in ET.parse(root / "report.xml").iter("testcase"):
        kinds = {child.tag: child.get("type", "") for child in case}
        if "error" in kinds:
            result[case.get("name", "")] = "ERROR"  # a teardown error wins over the call's outcome
        elif "failure" in kinds:
            result[case.get("name", "")] = "FAILED"
        elif "skipped" in kinds:
            result[case.get("name", "")] = "XFAIL" if kinds["skipped"] == "pytest.xfail" else "SKIPPED"
        else:
            result[case.get("name", "")] = "PASSED"
    assert len(result) == 8, proc.stdout + proc.stderr
    return result


def test_a_test_leaving_an_asyncio_task_running_fails(outcomes: dict[str, str]) -> None:
    assert outcomes["test_leaks_a_task"] == "ERROR"
    assert outcomes["test_awaits_its_task"] == "PASSED"
    assert outcomes["test_fixture_owned_task_is_fine"] == "PASSED"


def test_a_test_leaving_a_child_process_running_fails(outcomes: dict[str, str]) -> None:
    assert outcomes["test_leaks_a_process"] == "ERROR"
    assert outcomes["test_waits_for_its_process"] == "PASSED"


def test_an_integration_test_that_skips_fails_but_unit_tests_may_skip(outcomes: dict[str, str]) -> None:
    assert outcomes["test_integration_that_skips"] == "FAILED"
    assert outcomes["test_integration_xfail_is_not_a_skip"] == "XFAIL"
    assert outcomes["test_unit_may_skip"] == "SKIPPED"

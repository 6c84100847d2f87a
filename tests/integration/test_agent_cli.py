"""`vnode run` as a process: a bad config exits non-zero naming the key, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CASES = [
    ("InterlinkURL: ftp://nope\n", "InterlinkURL", "must start with unix://"),
    ("InterlinkURL: unix:///p.sock\nResources:\n  CPU: lots\n", "Resources.CPU", "not a Kubernetes quantity"),
    ("InterlinkURL: unix:///p.sock\nNodeTaints:\n  - Key: k\n    Effect: Whenever\n",
     "NodeTaints[0].Effect", "not one of"),
    ("InterlinkURL: unix:///p.sock\nDialect: grpc\n", "Dialect", "not one of"),
    ("InterlinkURL: [broken\n", "(file)", "not valid YAML"),
]


def run_vnode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("NODENAME", None)
    return subprocess.run([sys.executable, "-m", "vnode", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO), env=full_env, check=False)


@pytest.mark.parametrize(("config", "key", "problem"), CASES)
def test_bad_config_exits_non_zero_naming_the_key(tmp_path: Path, config: str, key: str,
                                                  problem: str) -> None:
    path = tmp_path / "vnode.yaml"
    path.write_text(config)
    done = run_vnode("run", "--config", str(path), "--nodename", "vn-1")
    assert done.returncode == 2
    assert f"config key {key}" in done.stderr and problem in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_node_name_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "vnode.yaml"
    path.write_text("InterlinkURL: unix:///p.sock\n")
    done = run_vnode("run", "--config", str(path))
    assert done.returncode == 2 and "NODENAME" in done.stderr


def test_interlink_flags_and_configpath_env_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "InterLinkConfig.yaml"
    path.write_text("InterlinkURL: http://localhost\nInterlinkPort: '4000'\n")
    done = run_vnode("check-config", "-nodename", "vn-1", env={"CONFIGPATH": str(path)})
    assert done.returncode == 0, done.stderr
    assert "http://localhost:4000" in done.stdout


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"VNODE_LOG_FORMAT": "xml"}, "VNODE_LOG_FORMAT"),
])
def test_observability_settings_it_cannot_honour_exit_2_naming_the_variable(
        tmp_path: Path, env: dict[str, str], named: str) -> None:
    path = tmp_path / "vnode.yaml"
    path.write_text("InterlinkURL: unix:///p.sock\n")
    done = run_vnode("run", "--config", str(path), "--nodename", "vn-1", env=env)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr

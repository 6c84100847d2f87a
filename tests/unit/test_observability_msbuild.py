"""hack/metrics-server's version choice: the newest release of the series the proxy serves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "hack" / "metrics-server" / "msbuild.py"
_SPEC = importlib.util.spec_from_file_location("msbuild", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
msbuild = importlib.util.module_from_spec(_SPEC)
sys.modules["msbuild"] = msbuild
_SPEC.loader.exec_module(msbuild)


def test_the_newest_v0_8_release_is_chosen_numerically() -> None:
    versions = ["v0.7.2", "v0.8.0", "v0.8.10", "v0.8.9", "v0.8.11-rc.1", "v0.9.0"]
    assert msbuild.newest(versions) == "v0.8.10"


def test_no_release_of_the_series_is_an_error_listing_what_exists() -> None:
    with pytest.raises(msbuild.BuildError) as caught:
        msbuild.newest(["v0.7.2", "v0.9.0"])
    assert "v0.8.x" in str(caught.value) and "v0.9.0" in str(caught.value)


def test_a_bad_version_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_SERVER_VERSION", "latest")
    with pytest.raises(msbuild.BuildError, match="METRICS_SERVER_VERSION"):
        msbuild.resolve_version()
    monkeypatch.setenv("METRICS_SERVER_VERSION", "0.8.0")
    assert msbuild.resolve_version() == "v0.8.0"


def test_the_binary_lives_in_the_testbed_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VNODE_TESTBED_CACHE", str(tmp_path))
    assert msbuild.binary("v0.8.0") == tmp_path / "metrics-server-0.8.0" / "bin" / "metrics-server"

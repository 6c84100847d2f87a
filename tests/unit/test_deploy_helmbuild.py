"""hack/helm/helmbuild.py: the pure parts of building helm from the Go module proxy, and the cached
binary reporting the version it was built as."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.deploy_support import helm_bin

sys.path.insert(0, str(REPO / "hack" / "helm"))
import helmbuild  # type: ignore[import-not-found]


@pytest.mark.parametrize(("text", "version"), [("3.22.0", "v3.22.0"), ("v3.22.0", "v3.22.0"), (" v3.9.11\n", "v3.9.11")])
def test_versions_are_normalized_to_v3_tags(text: str, version: str) -> None:
    assert helmbuild.normalize_version(text) == version


@pytest.mark.parametrize("text", ["4.0.0", "v3", "latest", "v3.22", "v3.22.0-rc.1", "3.22.0; rm -rf /"])
def test_anything_but_a_helm3_release_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(helmbuild.BuildError, match="HELM_VERSION"):
        helmbuild.normalize_version(text)


def test_wrapper_requires_only_helm_and_keeps_its_go_and_godebug_lines() -> None:
    gomod = "module helm.sh/helm/v3\n\ngo 1.26.0\n\ngodebug x509negativeserial=1\n\nrequire (\n\tk8s.io/client-go v0.37.0\n)\n"
    wrapper = helmbuild.wrapper_gomod(gomod, "v3.22.0")
    assert "go 1.26.0" in wrapper
    assert "godebug x509negativeserial=1" in wrapper
    assert "require helm.sh/helm/v3 v3.22.0" in wrapper
    assert "client-go" not in wrapper  # minimal version selection takes helm's own pins


def test_kubernetes_version_stamped_into_helm_comes_from_client_go() -> None:
    assert helmbuild.k8s_version_for("v0.35.4") == ("1", "35")
    with pytest.raises(helmbuild.BuildError):
        helmbuild.k8s_version_for("v1.2.3")


def test_ldflags_stamp_helms_version_variables_like_its_makefile() -> None:
    flags = helmbuild.ldflags("v3.22.0", "abc123", ("1", "37"))
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in flags
    assert "-X helm.sh/helm/v3/internal/version.gitCommit=abc123" in flags
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in flags
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" in flags


def test_cached_versions_are_ordered_numerically_and_need_a_complete_build(tmp_path: Path) -> None:
    for v, complete in (("3.9.0", True), ("3.22.0", True), ("3.10.1", True), ("3.23.0", False)):
        (tmp_path / f"helm-{v}" / "bin").mkdir(parents=True)
        if complete:
            (tmp_path / f"helm-{v}" / "bin" / "BUILD-INFO.json").write_text("{}")
    assert helmbuild.cached_versions(tmp_path) == ["v3.9.0", "v3.10.1", "v3.22.0"]


def test_an_explicit_version_is_used_without_asking_the_proxy(tmp_path: Path) -> None:
    assert helmbuild.resolve_version("3.21.4", tmp_path) == "v3.21.4"
    assert not (tmp_path / "resolved-helm-v3.json").exists()


def test_built_helm_reports_the_version_of_its_cache_directory() -> None:
    helm = helm_bin()
    info = json.loads((helm.parent / "BUILD-INFO.json").read_text())
    out = subprocess.run([str(helm), "version", "--template", "{{.Version}}"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out == info["helm"] == "v" + helm.parent.parent.name.removeprefix("helm-")
    assert info["helm"].startswith("v3.")


def test_build_is_idempotent_and_prints_the_cached_bin_dir() -> None:
    first = helm_bin().parent
    again = subprocess.run([str(REPO / "hack" / "helm" / "build")], capture_output=True, text=True, check=True,
                           timeout=120)
    assert Path(again.stdout.strip()) == first
    assert "building" not in again.stderr

"""The recipe hack/interlink/build follows to build interLink's Go peers (pure parts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "interlink"))

import ilbuild

# The shape of interLink's go.mod at 0.6.2 (abridged): a require block and the superfly replace.
INTERLINK_GOMOD = """module github.com/interlink-hq/interlink

go 1.26.0

require (
\tgithub.com/virtual-kubelet/virtual-kubelet v1.11.0
\tk8s.io/api v0.33.1
)

replace github.com/virtual-kubelet/virtual-kubelet => github.com/superfly/virtual-kubelet v0.0.0-20250426133649-339b787d1205
"""


def test_replace_read_from_a_single_line_directive() -> None:
    assert ilbuild.remote_replaces(INTERLINK_GOMOD) == {
        "github.com/virtual-kubelet/virtual-kubelet": ("github.com/superfly/virtual-kubelet",
                                                       "v0.0.0-20250426133649-339b787d1205"),
    }


def test_replace_block_keeps_module_targets_and_drops_local_directories() -> None:
    gomod = """module x

replace (
\ta.example/one v1.0.0 => b.example/one v1.2.0 // pinned fork
\ta.example/local => ./staging/local
\ta.example/abs => /src/abs
)
"""
    assert ilbuild.remote_replaces(gomod) == {"a.example/one": ("b.example/one", "v1.2.0")}


def test_unparseable_replace_is_an_error_naming_the_line() -> None:
    with pytest.raises(ilbuild.BuildError, match="replace directive"):
        ilbuild.remote_replaces("replace nonsense here\n")


def test_wrapper_requires_the_peer_with_its_go_line_and_replace() -> None:
    text = ilbuild.wrapper_gomod(ilbuild.INTERLINK, ilbuild.INTERLINK.ref, INTERLINK_GOMOD)
    lines = text.splitlines()
    assert lines[0] == f"module {ilbuild.WRAPPER_MODULE}"
    assert "go 1.26.0" in lines
    assert f"require github.com/interlink-hq/interlink {ilbuild.INTERLINK.ref}" in lines
    assert ("replace github.com/virtual-kubelet/virtual-kubelet => github.com/superfly/virtual-kubelet "
            "v0.0.0-20250426133649-339b787d1205") in lines


def test_tools_file_imports_every_main_package_of_the_peer() -> None:
    text = ilbuild.tools_go(ilbuild.INTERLINK)
    assert text.startswith("//go:build tools")
    for pkg in ilbuild.INTERLINK.commands.values():
        assert f'_ "{pkg}"' in text


def test_interlink_binaries_get_the_kubelet_version_stamped() -> None:
    flags = ilbuild.ldflags(ilbuild.INTERLINK, "v1.35.4")
    assert "-X github.com/interlink-hq/interlink/pkg/virtualkubelet.KubeletVersion=v1.35.4" in flags
    assert "-X" not in ilbuild.ldflags(ilbuild.SLURM_PLUGIN, "v1.35.4")


def test_a_different_fork_in_the_upstream_go_mod_is_reported_not_overridden() -> None:
    other = INTERLINK_GOMOD.replace("superfly", "someone-else")
    with pytest.raises(ilbuild.BuildError, match="someone-else"):
        ilbuild.check_replaces(ilbuild.INTERLINK, ilbuild.remote_replaces(other))
    ilbuild.check_replaces(ilbuild.INTERLINK, ilbuild.remote_replaces(INTERLINK_GOMOD))


def test_the_slurm_plugin_is_asked_for_under_its_declared_old_module_path() -> None:
    assert ilbuild.SLURM_PLUGIN.module == "github.com/intertwin-eu/interlink-slurm-plugin"
    assert ilbuild.INTERLINK.module == ilbuild.INTERLINK.module.lower()


def _fake_build(layout: ilbuild.Layout, pins: tuple[ilbuild.Pin, ...]) -> None:
    layout.bin_dir.mkdir(parents=True)
    for pin in pins:
        for name in pin.commands:
            (layout.bin_dir / name).write_text("#!/bin/sh\n")
            (layout.bin_dir / name).chmod(0o755)
    layout.info_path.write_text(json.dumps({"pins": ilbuild.pin_key(pins)}))


def test_cache_is_reused_only_for_the_same_pins(tmp_path: Path) -> None:
    layout = ilbuild.Layout(tmp_path)
    assert not ilbuild.is_built(layout, ilbuild.PINS)
    _fake_build(layout, ilbuild.PINS)
    assert ilbuild.is_built(layout, ilbuild.PINS)
    moved = ilbuild.Pin(**{**ilbuild.SLURM_PLUGIN.__dict__, "ref": "0123456789ab"})
    assert not ilbuild.is_built(layout, (ilbuild.INTERLINK, moved))


def test_cache_with_a_missing_binary_is_rebuilt(tmp_path: Path) -> None:
    layout = ilbuild.Layout(tmp_path)
    _fake_build(layout, ilbuild.PINS)
    (layout.bin_dir / "interlink").unlink()
    assert not ilbuild.is_built(layout, ilbuild.PINS)


def test_cache_lives_in_a_directory_named_after_the_interlink_release(tmp_path: Path) -> None:
    layout = ilbuild.Layout(ilbuild.cache_root({"VNODE_TESTBED_CACHE": str(tmp_path)}))
    assert layout.bin_dir == tmp_path / "interlink-0.6.2" / "bin"


def test_kubelet_version_prefers_env_then_the_testbed_resolution(tmp_path: Path) -> None:
    assert ilbuild.kubelet_version(tmp_path, {}) == ilbuild.DEFAULT_KUBELET_VERSION
    (tmp_path / "resolved-1.35.json").write_text(json.dumps({"version": "1.35.9", "at": 0}))
    assert ilbuild.kubelet_version(tmp_path, {}) == "v1.35.9"
    assert ilbuild.kubelet_version(tmp_path, {"INTERLINK_KUBELET_VERSION": "1.34.2"}) == "v1.34.2"

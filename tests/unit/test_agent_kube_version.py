"""The apiserver's /version answer, read for what the Node may declare."""

from __future__ import annotations

from vnode.kube.version import ServerVersion, parse_server_version


def test_git_version_gives_major_and_minor() -> None:
    info = {"major": "1", "minor": "36", "gitVersion": "v1.36.3"}
    assert parse_server_version(info) == ServerVersion(1, 36)
    assert str(parse_server_version(info)) == "1.36"


def test_prereleases_and_vendor_builds_count_as_their_minor() -> None:
    assert parse_server_version({"gitVersion": "v1.36.0-rc.1"}) == ServerVersion(1, 36)
    assert parse_server_version({"gitVersion": "v1.30.2-gke.1587003"}) == ServerVersion(1, 30)


def test_major_and_minor_fields_are_used_when_git_version_is_not_semver() -> None:
    assert parse_server_version({"major": "1", "minor": "36+", "gitVersion": "custom"}) == \
        ServerVersion(1, 36)


def test_an_answer_without_numbers_is_no_version() -> None:
    assert parse_server_version({"gitVersion": "unknown"}) is None
    assert parse_server_version({"major": "", "minor": ""}) is None
    assert parse_server_version("not json") is None
    assert parse_server_version(None) is None


def test_versions_compare_numerically() -> None:
    assert ServerVersion(1, 36) > ServerVersion(1, 9)
    assert ServerVersion(2, 0) > ServerVersion(1, 36)

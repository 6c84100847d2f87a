"""Several testbed instances on one machine (hack/testbedlib): a kube-only control plane of another
version on shifted ports, in its own state dir, next to the shared full instance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from testbedlib import cli, control_plane, holders, layout, pki
from testbedlib.layout import K8S_136, Layout, LayoutError, validate_port_offset


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Components build their readiness probes' TLS contexts from the instance's CA up front."""
    path = tmp_path_factory.mktemp("pki")
    pki.ensure_pki(path)
    return path


@pytest.fixture
def scratch_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki_dir: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "pki").symlink_to(pki_dir)
    monkeypatch.setenv("VNODE_TESTBED_STATE", str(state))
    monkeypatch.setenv("VNODE_TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("K8S_VERSION", "1.36.3")  # never ask the module proxy from a unit test
    return state


def _argv(comps: dict, name: str) -> str:
    return " ".join(comps[name].argv)


def test_the_shared_instance_keeps_the_default_ports(scratch_state: Path) -> None:
    lay = Layout.for_version("1.35.4")
    assert (lay.apiserver_port, lay.etcd_client_port, lay.etcd_peer_port) == (6443, 2379, 2380)
    assert (lay.controller_manager_port, lay.scheduler_port) == (10257, 10259)
    assert lay.apiserver_url == "https://127.0.0.1:6443"


def test_a_port_offset_moves_every_control_plane_port_and_nothing_else(scratch_state: Path) -> None:
    lay = Layout.for_version("1.36.3", kube_only=True, port_offset=100)
    comps = control_plane.components(lay, "owner")
    assert "--secure-port=6543" in _argv(comps, "kube-apiserver")
    assert "--etcd-servers=http://127.0.0.1:2479" in _argv(comps, "kube-apiserver")
    assert "--listen-peer-urls=http://127.0.0.1:2480" in _argv(comps, "etcd")
    assert "--secure-port=10357" in _argv(comps, "kube-controller-manager")
    assert "--secure-port=10359" in _argv(comps, "kube-scheduler")
    assert {c.port for c in comps.values()} == {2479, 6543, 10357, 10359}
    for default in layout.KUBE_PORTS:
        assert all(
            f":{default}" not in " ".join(c.argv) and f"={default}" not in " ".join(c.argv) for c in comps.values()
        )
    assert lay.apiserver_url == "https://127.0.0.1:6543"


def test_the_shared_instance_command_lines_are_what_they_were_before_offsets_existed(scratch_state: Path) -> None:
    # A changed argv changes the fingerprint, and the next `up` would restart the shared apiserver.
    comps = control_plane.components(Layout.for_version("1.35.4"), "owner")
    assert "--secure-port=6443" in _argv(comps, "kube-apiserver")
    assert "--etcd-servers=http://127.0.0.1:2379" in _argv(comps, "kube-apiserver")
    assert "--initial-cluster=testbed=http://127.0.0.1:2380" in _argv(comps, "etcd")
    assert "--secure-port=10257" in _argv(comps, "kube-controller-manager")
    assert "--secure-port=10259" in _argv(comps, "kube-scheduler")


@pytest.mark.parametrize("offset", [1, 2, -100, -1, 23000, 100000])
def test_offsets_that_collide_or_leave_the_usable_range_are_refused(offset: int) -> None:
    with pytest.raises(LayoutError, match=f"--port-offset {offset}"):
        validate_port_offset(offset)


@pytest.mark.parametrize("offset", [0, 100, 200, 1000])
def test_offsets_clear_of_every_default_port_are_accepted(offset: int) -> None:
    validate_port_offset(offset)


def test_the_pinned_136_instance_is_valid_and_relocates_with_the_state_root(scratch_state: Path) -> None:
    validate_port_offset(K8S_136.port_offset)
    assert K8S_136.k8s_version.startswith("1.36.")
    assert K8S_136.state == Path(f"{scratch_state}-1.36")


def test_a_kube_only_instance_has_no_slurm_components_and_no_slurm_in_its_info(scratch_state: Path) -> None:
    lay = Layout.for_version("1.36.3", kube_only=True, port_offset=100)
    assert list(cli.all_components(lay)) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    info = cli.info(lay)
    assert info["kube_only"] is True and info["apiserver_url"] == "https://127.0.0.1:6543"
    assert not {k for k in info if k.startswith("slurm") or k in ("singularity", "standin_dir")}
    assert "SLURM_CONF" not in info["env"]
    assert str(lay.standin_dir) not in info["env"]["PATH"]
    assert "SLURM_CONF" not in cli.env_lines(lay)


def test_a_full_instance_lists_slurm_and_the_stand_in(scratch_state: Path) -> None:
    lay = Layout.for_version("1.35.4")
    assert {"munged", "slurmctld", "slurmd", "kube-apiserver"} <= set(cli.all_components(lay))
    info = cli.info(lay)
    assert info["slurm_partition"] and info["env"]["SLURM_CONF"] == "/etc/slurm/slurm.conf"


def test_only_a_full_instance_takes_the_machine_wide_lock(scratch_state: Path) -> None:
    assert Layout.for_version("1.36.3", kube_only=True, port_offset=100).lock_file == scratch_state / "lock"
    full = Layout.for_version("1.35.4").lock_file
    assert full == Path("/run/lock/vnode-testbed.lock") or full == scratch_state / "lock"


def test_down_status_and_env_find_the_mode_recorded_by_up(scratch_state: Path) -> None:
    (scratch_state / "instance.json").write_text('{"kube_only": true, "port_offset": 100}\n')
    lay = cli.current_layout()
    assert (lay.kube_only, lay.port_offset, lay.k8s_version) == (True, 100, "1.36.3")
    # Flags given to `up` win over the record.
    assert cli.current_layout(port_offset=200).port_offset == 200


def test_up_refuses_a_port_offset_without_kube_only(scratch_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["up", "--port-offset", "100"]) == 2
    assert "--port-offset needs --kube-only" in capsys.readouterr().err


def test_up_refuses_a_colliding_offset_naming_it(scratch_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["up", "--kube-only", "--port-offset", "1"]) == 2
    assert "--port-offset 1" in capsys.readouterr().err


def test_changing_the_mode_of_a_stopped_instance_is_allowed(scratch_state: Path) -> None:
    (scratch_state / "instance.json").write_text('{"kube_only": false, "port_offset": 0}\n')
    cli._check_instance_mode(Layout.for_version("1.36.3", kube_only=True, port_offset=100))  # nothing runs


# --- holders: who may stop an instance a test session started --------------------------------------


def test_a_session_sees_the_other_live_holders_when_it_releases(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        with holders.guarded(tmp_path):
            holders.hold(tmp_path)
            holders.hold(tmp_path, other.pid)
        assert holders.release(tmp_path) == [other.pid]
        assert holders.release(tmp_path, other.pid) == []
    finally:
        other.kill()
        other.wait()


def test_holders_that_died_do_not_count_and_are_forgotten(tmp_path: Path) -> None:
    gone = subprocess.Popen(["sleep", "60"])
    holders.hold(tmp_path, gone.pid)
    gone.kill()
    gone.wait()
    assert holders.live_holders(tmp_path) == []
    assert not list((tmp_path / "holders").iterdir())


def test_a_process_that_does_not_exist_cannot_hold(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(ProcessLookupError, match=str(gone.pid)):
        holders.hold(tmp_path, gone.pid)


def test_a_recycled_pid_is_not_mistaken_for_the_holder(tmp_path: Path) -> None:
    (tmp_path / "holders").mkdir()
    (tmp_path / "holders" / "1").write_text("12345678\n")  # pid 1 lives, but started at another tick
    assert holders.live_holders(tmp_path) == []


def test_the_started_by_session_marker_round_trips(tmp_path: Path) -> None:
    assert not holders.started_by_session(tmp_path)
    holders.mark_started_by_session(tmp_path)
    assert holders.started_by_session(tmp_path)
    holders.clear_started_by_session(tmp_path)
    assert not holders.started_by_session(tmp_path)


def test_status_of_a_fresh_state_dir_says_stopped_before_any_pki_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VNODE_TESTBED_STATE", str(tmp_path / "fresh"))
    monkeypatch.setenv("K8S_VERSION", "1.36.3")
    assert cli.main(["status", "--json"]) == 3
    rows = json.loads(capsys.readouterr().out)["components"]
    assert {r["state"] for r in rows} == {"stopped"}
    assert (
        cli.all_components(Layout.for_version("1.36.3", kube_only=True, port_offset=100))["kube-apiserver"]
        .probe()
        .startswith("no admin credentials")
    )


def test_a_stopped_kube_only_instance_keeps_its_version_without_k8s_version(
    scratch_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (scratch_state / "instance.json").write_text('{"kube_only": true, "port_offset": 100}\n')
    (scratch_state / "testbed.json").write_text('{"k8s_version": "1.36.3"}\n')
    monkeypatch.delenv("K8S_VERSION")
    assert cli.current_layout().k8s_version == "1.36.3"

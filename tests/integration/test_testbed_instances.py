"""A second, kube-only control plane of another version runs next to the shared testbed, independently.

`testbed_136` is Kubernetes 1.36 in its own state dir (PKI, etcd, logs) on ports shifted by 100; the
shared `testbed` (1.35 + SLURM) must neither notice it nor be touched by its `up` and `down`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, KubeTestbed, Testbed, unique

pytestmark = pytest.mark.integration

TESTBED = [sys.executable, str(REPO / "hack" / "testbed")]


def run_testbed(state: Path, *args: str, version: str | None = None, timeout: float = 600):
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin"}
    env |= {"VNODE_TESTBED_STATE": str(state), "HOME": str(Path.home())}
    if version:
        env["K8S_VERSION"] = version
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def component_pids(state: Path) -> dict[str, int]:
    out = run_testbed(state, "status", "--json")
    assert out.returncode == 0, f"instance in {state} is not fully ready:\n{out.stdout}{out.stderr}"
    return {c["component"]: c["pid"] for c in json.loads(out.stdout)["components"]}


def listeners() -> list[str]:
    lines = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_the_136_instance_is_a_separate_cluster_of_its_own_version(testbed: Testbed, testbed_136: KubeTestbed) -> None:
    assert testbed_136.k8s_version.startswith("1.36.") and testbed.k8s_version.startswith("1.35.")
    assert (testbed.apiserver_url, testbed_136.apiserver_url) == ("https://127.0.0.1:6443", "https://127.0.0.1:6543")
    assert testbed_136.state_dir != testbed.state_dir
    assert testbed_136.ca_cert.read_bytes() != testbed.ca_cert.read_bytes()  # its own PKI
    version = json.loads(testbed_136.kubectl_run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{testbed_136.k8s_version}"

    # Its own etcd: what one cluster stores, the other does not have.
    name = testbed_136.create_namespace("only-in-136")
    try:
        assert testbed.kubectl_run("get", "namespace", name, check=False).returncode != 0
    finally:
        testbed_136.delete_namespace(name)

    # Control plane only, on loopback, shifted ports; the apiserver→kubelet identity has its RBAC.
    assert list(component_pids(testbed_136.state_dir)) == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    for port in (6543, 2479, 2480, 10357, 10359):
        assert [addr for addr in listeners() if addr.endswith(f":{port}")] == [f"127.0.0.1:{port}"]
    testbed_136.kubectl_run("get", "clusterrolebinding", "vnode-testbed:apiserver-kubelet-client")
    assert "SLURM_CONF" not in json.loads(run_testbed(testbed_136.state_dir, "env", "--json").stdout)["env"]


def test_up_refuses_to_change_the_ports_of_a_running_instance(testbed_136: KubeTestbed) -> None:
    before = component_pids(testbed_136.state_dir)
    out = run_testbed(testbed_136.state_dir, "up", "--kube-only", "--port-offset", "300")
    assert out.returncode == 1
    assert "holds a running instance" in out.stderr and "'port_offset': 100" in out.stderr
    assert component_pids(testbed_136.state_dir) == before


def test_down_of_a_kube_only_instance_stops_exactly_that_instance(
    testbed: Testbed, testbed_136: KubeTestbed, tmp_path: Path
) -> None:
    shared, second = component_pids(testbed.state_dir), component_pids(testbed_136.state_dir)
    scratch = tmp_path / unique("scratch")
    # A third instance from the shared instance's cached binaries, ports shifted by 200.
    up = run_testbed(scratch, "up", "--kube-only", "--port-offset", "200", version=testbed.k8s_version)
    assert up.returncode == 0, up.stderr
    try:
        mine = component_pids(scratch)
        assert [a for a in listeners() if a.endswith(":6643")] == ["127.0.0.1:6643"]
        kubeconfig = scratch / "kube" / "admin.kubeconfig"
        got = testbed.run([testbed.kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw", "/readyz"])
        assert got.stdout == "ok"
    finally:
        down = run_testbed(scratch, "down")
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in mine.values() if alive(pid)]
    assert not [a for a in listeners() if a.endswith((":6643", ":2579", ":2580", ":10457", ":10459"))]
    # The other two instances did not notice: same processes, all ready.
    assert component_pids(testbed.state_dir) == shared
    assert component_pids(testbed_136.state_dir) == second


def test_up_refuses_a_port_held_by_a_process_it_did_not_start_naming_the_component(tmp_path: Path) -> None:
    # A stranger listens where a kube-only instance at offset 400 would put its apiserver (6443 + 400).
    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind(("127.0.0.1", 6843))
    stranger.listen()
    state = tmp_path / "state"
    try:
        out = run_testbed(state, "up", "--kube-only", "--port-offset", "400")
    finally:
        stranger.close()
    assert out.returncode != 0, out.stdout
    said = out.stdout + out.stderr
    assert "kube-apiserver" in said and "127.0.0.1:6843" in said and "already in use" in said, said
    assert "Traceback" not in said
    # Nothing was started: no component of that state dir runs, and nothing listens on its etcd port.
    status = run_testbed(state, "status", "--json")
    assert status.returncode != 0
    assert all(c["pid"] is None for c in json.loads(status.stdout)["components"]), status.stdout
    assert not [addr for addr in listeners() if addr.endswith(":2779")]

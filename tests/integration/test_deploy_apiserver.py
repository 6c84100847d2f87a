"""The chart, the rendered manifests and the example pods against the real testbed apiserver:
`helm lint`, and `kubectl apply --dry-run=server` (full admission and validation, nothing stored)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Testbed
from tests.deploy_support import (
    CHART,
    EXAMPLES,
    MY_VALUES,
    documents,
    helm_bin,
    helm_template,
)

pytestmark = pytest.mark.integration
MANIFESTS = CHART.parents[1] / "manifests"
PODS = EXAMPLES / "pods"


def dry_run(testbed: Testbed, text: str) -> str:
    done = testbed.kubectl_run("apply", "--dry-run=server", "-f", "-", input=text, check=False)
    assert done.returncode == 0, f"the apiserver refused:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("values", [MY_VALUES, *sorted(EXAMPLES.glob("values-*.yaml"))], ids=lambda p: p.name)
def test_helm_lint_passes_strict_with_each_example(values: Path) -> None:
    done = subprocess.run([str(helm_bin()), "lint", "--strict", str(CHART), "--values", str(values)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_helm_template_of_my_values_is_accepted_by_the_apiserver(testbed: Testbed, namespace: str) -> None:
    text = helm_template(MY_VALUES, namespace=namespace)
    out = dry_run(testbed, text)
    expected = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents(text)}
    for obj in expected:
        assert obj.split("/", 1)[1] in out, f"{obj} missing from `{out}`"
    assert "(server dry run)" in out


@pytest.mark.parametrize("values", [{"vnode": {"csrApprover": {"enabled": True}, "stateNamespace": "default"}},
                                    {"virtualNode": {"disableCSR": True}, "vnode": {"kubeletCert": {"secretName": "x"}}},
                                    {"plugin": {"enabled": True, "socket": "unix:///var/run/plugin.sock"},
                                     "sshBastion": {"enabled": False}}],
                         ids=["approver+ledger-ns", "cert-secret", "in-cluster"])
def test_chart_variants_are_accepted_by_the_apiserver(testbed: Testbed, namespace: str, tmp_path: Path,
                                                      values: dict[str, object]) -> None:
    dry_run(testbed, helm_template(MY_VALUES, values, namespace=namespace, tmp_dir=tmp_path))


@pytest.mark.parametrize("manifest", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_rendered_manifests_are_accepted_by_the_apiserver(testbed: Testbed, namespace: str, manifest: str) -> None:
    # Each file creates namespace `interlink` first; a dry run stores nothing, so the objects go to
    # this test's namespace instead.
    docs = [d for d in documents((MANIFESTS / manifest).read_text()) if d["kind"] != "Namespace"]
    for d in docs:
        if d["metadata"].get("namespace") == "interlink":
            d["metadata"]["namespace"] = namespace
        for subject in d.get("subjects", []):
            subject["namespace"] = namespace
    dry_run(testbed, yaml.safe_dump_all(docs))


@pytest.mark.parametrize("pod_file", sorted(p.name for p in PODS.glob("*.yaml")))
def test_example_pods_are_accepted_by_the_apiserver(testbed: Testbed, namespace: str, pod_file: str) -> None:
    done = testbed.kubectl_run("apply", "--dry-run=server", "-n", namespace, "-f", str(PODS / pod_file), check=False)
    assert done.returncode == 0, done.stderr
    for d in documents((PODS / pod_file).read_text()):
        if d["kind"] == "Pod":
            spec = d["spec"]
            assert spec["nodeSelector"] == {"kubernetes.io/hostname": "vnode-demo"}
            assert {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"} \
                in spec["tolerations"]


def helm_install_dry_run(testbed: Testbed, namespace: str, *values: Path) -> str:
    args = [str(helm_bin()), "install", "vnode-demo", str(CHART), "--namespace", namespace, "--dry-run=server",
            f"--kubeconfig={testbed.kubeconfig}"]
    for v in values:
        args += ["--values", str(v)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_helm_install_prints_the_login_nodes_ssh_command(testbed: Testbed, namespace: str) -> None:
    notes = helm_install_dry_run(testbed, namespace, MY_VALUES).split("NOTES:", 1)[1]
    assert "plugin-direct: unix:///var/run/plugin.sock, plugin dialect" in notes
    assert "-p 31022" in notes and "-R /var/run/plugin.sock:$HOME/.vnode/plugin.sock interlink@" in notes


def test_helm_install_notes_for_a_tcp_plugin_port_forward_that_port(testbed: Testbed, namespace: str,
                                                                    tmp_path: Path) -> None:
    values = tmp_path / "edge_with_socket.yaml"  # interLink's example: plugin on localhost:3000 via the bastion
    values.write_text(yaml.safe_dump({"nodeName": "interlink-with-socket",
                                      "interlink": {"enabled": True, "socket": "unix:///var/run/interlink.sock"},
                                      "plugin": {"address": "http://localhost"},
                                      "sshBastion": {"enabled": True, "port": 31021,
                                                     "clientKeys": {"authorizedKeys": "ssh-ed25519 AAAAC3Nza x"}}}))
    notes = helm_install_dry_run(testbed, namespace, values).split("NOTES:", 1)[1]
    assert "-R 3000:$HOME/.vnode/plugin.sock" in notes and "-p 31021" in notes


@pytest.mark.parametrize(("values", "violators"), [
    ({"sshBastion": {"enabled": False}}, set()),
    ({"sshBastion": {"enabled": False}, "plugin": {"enabled": True, "socket": "unix:///var/run/plugin.sock"}}, set()),
    ({"sshBastion": {"enabled": False}, "vnode": {"sshTunnel": {
        "enabled": True, "destination": "u@login", "remoteSocket": "/home/u/plugin.sock", "keySecret": "k"}}}, set()),
    ({}, {"ssh-bastion"}),  # my-values.yaml as it is: sshd starts as root to switch to its login user
], ids=["agent", "agent+vnode-plugin", "agent+tunnel-sidecar", "agent+bastion"])
def test_pod_security_restricted_holds_for_all_but_the_bastion(testbed: Testbed, namespace: str, tmp_path: Path,
                                                               values: dict[str, object], violators: set[str]) -> None:
    testbed.kubectl_run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    done = testbed.kubectl_run("apply", "--dry-run=server", "-f", "-",
                               input=helm_template(MY_VALUES, values, namespace=namespace, tmp_dir=tmp_path))
    warnings = [line for line in done.stderr.splitlines() if "would violate PodSecurity" in line]
    named = {c for line in warnings for c in ("vk", "plugin", "ssh-bastion", "ssh-tunnel") if f'"{c}"' in line}
    assert named == violators, warnings

"""hack/metrics-server: the version choice (the newest release of the series the proxy serves) and
what it registers and runs on the testbed (manifests, flags, serving certificate)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.observability_support import msrun

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


def test_the_apiservice_routes_to_localhost_through_an_external_name_service() -> None:
    service, apiservice = msrun.service_manifests(4443, b"PEM")
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost"}
    assert apiservice["metadata"]["name"] == "v1beta1.metrics.k8s.io"
    assert apiservice["spec"]["service"] == {"name": msrun.NAME, "namespace": "kube-system", "port": 4443}
    assert apiservice["spec"]["caBundle"] == "UEVN"


def test_metrics_server_gets_the_rbac_of_its_own_manifests() -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in msrun.rbac_manifests()}
    assert ("ClusterRoleBinding", f"{msrun.NAME}:auth-delegator") in kinds
    role = next(m for m in msrun.rbac_manifests() if m["kind"] == "ClusterRole")
    assert {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]} in role["rules"]


def test_the_serving_certificate_names_what_the_aggregator_verifies(tmp_path: Path) -> None:
    ca_pem, cert, _key = msrun.serving_pair(tmp_path)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{msrun.NAME}.kube-system.svc" in names.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf.verify_directly_issued_by(ca)


def test_kubelets_are_verified_against_the_cluster_ca_not_skipped(tmp_path: Path) -> None:
    args = msrun.argv(Path("/bin/ms"), 4443, tmp_path / "c", tmp_path / "k", tmp_path / "cfg", tmp_path / "ca.crt", "a=b")
    assert f"--kubelet-certificate-authority={tmp_path / 'ca.crt'}" in args
    assert not any("insecure" in a for a in args)
    assert "--kubelet-use-node-status-port" in args and "--node-selector=a=b" in args

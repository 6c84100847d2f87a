"""The serving certificate: CSR contents, self-signed fallback, files, renewal time."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vnode.kubelet import certs

IDENTITY = certs.ServingIdentity("gpu-node", ("10.1.2.3",), ("gpu-node.example",))


def test_csr_has_the_subject_sans_and_usages_the_kubelet_serving_signer_wants() -> None:
    key = certs.generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    csr = x509.load_pem_x509_csr(certs.build_csr(key, IDENTITY))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:gpu-node"
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert san.get_values_for_type(x509.DNSName) == ["gpu-node.example"]
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_csr_manifest_targets_the_kubelet_serving_signer() -> None:
    pem = certs.build_csr(certs.generate_key(), IDENTITY)
    manifest = certs.csr_manifest("node-csr-x", pem, expiration_seconds=86400)
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    assert spec["signerName"] == "kubernetes.io/kubelet-serving"
    assert spec["usages"] == ["digital signature", "key encipherment", "server auth"]
    assert base64.b64decode(spec["request"]) == pem
    assert spec["expirationSeconds"] == 86400


def test_identity_without_any_san_is_refused() -> None:
    with pytest.raises(ValueError, match="SAN"):
        certs.build_csr(certs.generate_key(), certs.ServingIdentity("n"))


def test_approver_check_accepts_only_this_nodes_well_formed_csrs() -> None:
    pem = certs.build_csr(certs.generate_key(), IDENTITY)
    assert certs.serving_csr_problems(pem, "gpu-node", ["10.1.2.3"]) == []
    assert any("system:node:other" in p for p in certs.serving_csr_problems(pem, "other", ["10.1.2.3"]))
    assert any("10.1.2.3" in p for p in certs.serving_csr_problems(pem, "gpu-node", ["10.9.9.9"]))
    assert certs.serving_csr_problems(b"garbage", "gpu-node", [])[0].startswith("not a PEM")


def test_self_signed_certificate_serves_tls_and_round_trips_through_files(tmp_path: Path) -> None:
    key = certs.generate_key()
    cert = certs.self_signed(key, certs.ServingIdentity("n", ("127.0.0.1",)))
    certs.write_pair(cert, key, tmp_path / "c.pem", tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    loaded, _ = certs.load_pair(tmp_path / "c.pem", tmp_path / "k.pem")
    assert loaded == cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))  # accepted by OpenSSL


def test_mismatched_key_and_certificate_are_refused(tmp_path: Path) -> None:
    cert = certs.self_signed(certs.generate_key(), IDENTITY)
    certs.write_pair(cert, certs.generate_key(), tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(ValueError, match="not the key"):
        certs.load_pair(tmp_path / "c.pem", tmp_path / "k.pem")


def test_renewal_is_due_at_80_percent_of_the_lifetime() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = certs.self_signed(certs.generate_key(), IDENTITY, lifetime=dt.timedelta(days=10), now=now)
    start = now - certs.CLOCK_SKEW
    expected = start + (now + dt.timedelta(days=10) - start) * 0.8
    assert certs.renewal_time(cert) == expected
    assert not certs.needs_renewal(cert, expected - dt.timedelta(seconds=1))
    assert certs.needs_renewal(cert, expected)

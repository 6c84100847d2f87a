"""The serving certificate: CSR contents, self-signed fallback, files, renewal time."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
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
    assert certs.serving_csr_problems(pem, "gpu-node", ["10.1.2.3"], ["gpu-node.example"]) == []
    assert any("gpu-node.example" in p for p in certs.serving_csr_problems(pem, "gpu-node", ["10.1.2.3"]))
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


def hand_made_csr(
    *,
    subject: list[x509.NameAttribute] | None = None,
    sans: list[x509.GeneralName] | None = None,
    ca: bool | None = None,
) -> bytes:
    """A CSR built outside vnode's builder, to feed the approver check what others might send."""
    key = certs.generate_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject or [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:gpu-node"),
    ]))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


IP_SAN = x509.IPAddress(ipaddress.ip_address("10.1.2.3"))


@pytest.mark.parametrize(
    ("csr", "problem"),
    [
        (lambda: hand_made_csr(sans=[IP_SAN], ca=True), "CA certificate"),
        (lambda: hand_made_csr(sans=[IP_SAN, x509.RFC822Name("a@b.example")]), "email, URI"),
        (lambda: hand_made_csr(sans=[IP_SAN, x509.UniformResourceIdentifier("spiffe://x/y")]), "email, URI"),
        (lambda: hand_made_csr(sans=[IP_SAN, x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]), "10.0.0.1"),
        (lambda: hand_made_csr(sans=[IP_SAN, x509.DNSName("kubernetes.default.svc")]), "kubernetes.default.svc"),
        (lambda: hand_made_csr(), "no subjectAltName"),
        (lambda: hand_made_csr(sans=[IP_SAN], subject=[
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:gpu-node")]), "system:masters"),
        (lambda: hand_made_csr(sans=[IP_SAN], subject=[
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:gpu-node")]), "is not [system:nodes]"),
        (lambda: hand_made_csr(sans=[IP_SAN], subject=[
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "extra"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:gpu-node")]), "besides CN and O"),
    ],
)
def test_approver_check_refuses_csrs_asking_for_more_than_the_node_needs(csr, problem: str) -> None:  # type: ignore[no-untyped-def]
    problems = certs.serving_csr_problems(csr(), "gpu-node", ["10.1.2.3"], ["gpu-node"])
    assert any(problem in p for p in problems), problems


def test_approver_check_accepts_a_non_ca_basic_constraints_extension() -> None:
    assert certs.serving_csr_problems(hand_made_csr(sans=[IP_SAN], ca=False), "gpu-node", ["10.1.2.3"]) == []


def test_generated_name_manifest_lets_the_apiserver_pick_the_suffix() -> None:
    pem = certs.build_csr(certs.generate_key(), IDENTITY)
    manifest = certs.csr_manifest("vnode-gpu-node-", pem, generate_name=True, signer="example.com/issuer")
    assert manifest["metadata"] == {"generateName": "vnode-gpu-node-"}
    assert manifest["spec"]["signerName"] == "example.com/issuer"  # type: ignore[index]


def test_combined_file_holds_chain_and_key_and_serves_tls(tmp_path: Path) -> None:
    key = certs.generate_key()
    cert = certs.self_signed(key, IDENTITY)
    path = tmp_path / "sub" / "kubelet-server-current.pem"
    certs.write_combined(certs.pem(cert), key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded, _ = certs.load_pair(path, path)
    assert loaded == cert
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(path), str(path))
    assert [p.name for p in path.parent.iterdir()] == ["kubelet-server-current.pem"]  # no temp file left


def test_identity_check_spots_a_changed_address_or_name() -> None:
    cert = certs.self_signed(certs.generate_key(), IDENTITY)
    assert certs.identity_problems(cert, IDENTITY) == []
    moved = certs.ServingIdentity("gpu-node", ("10.1.2.4",), ("gpu-node.example",))
    assert any("10.1.2.4" in p for p in certs.identity_problems(cert, moved))
    renamed = certs.ServingIdentity("cpu-node", ("10.1.2.3",), ("gpu-node.example",))
    assert any("system:node:cpu-node" in p for p in certs.identity_problems(cert, renamed))
    assert certs.identity_problems(cert, certs.ServingIdentity("gpu-node", ("10.1.2.3",))) != []

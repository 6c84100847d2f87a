"""The kubelet serving certificate: keys, CSRs, self-signed fallback, files, renewal time.

Pure ``cryptography`` work; submitting the CSR to the apiserver and waiting for its approval
belongs to ``vnode/kube`` (see :func:`csr_manifest` for the object to create).

The ``kubernetes.io/kubelet-serving`` signer wants ``CN=system:node:<name>``,
``O=system:nodes``, at least one DNS or IP SAN, no email/URI SANs, and the usages
digital signature + server auth (+ optionally key encipherment).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIGNER = "kubernetes.io/kubelet-serving"
NODE_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
USAGES = ("digital signature", "key encipherment", "server auth")
# Renew at 80 % of the lifetime, like client-go's certificate manager (70-90 % jittered).
RENEW_FRACTION = 0.8
# One year for the self-signed fallback: long enough not to surprise, short enough to rotate.
SELF_SIGNED_LIFETIME = dt.timedelta(days=365)
# Tolerate clocks that differ a little between the node and its callers.
CLOCK_SKEW = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class ServingIdentity:
    node_name: str
    ip_addresses: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()

    @property
    def common_name(self) -> str:
        return f"system:node:{self.node_name}"

    def subject(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, self.common_name),
            ]
        )

    def san(self) -> x509.SubjectAlternativeName:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in self.ip_addresses]
        if not names:
            raise ValueError("a kubelet serving certificate needs at least one IP or DNS SAN")
        return x509.SubjectAlternativeName(names)


def generate_key() -> PrivateKey:
    """ECDSA P-256: what the kubelet generates; fast and small."""
    return ec.generate_private_key(ec.SECP256R1())


_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_encipherment=True,
    content_commitment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def build_csr(key: PrivateKey, identity: ServingIdentity) -> bytes:
    """PEM ``CERTIFICATE REQUEST`` for the kubelet-serving signer."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(identity.subject())
        .add_extension(identity.san(), critical=False)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_manifest(
    name: str,
    csr_pem: bytes,
    *,
    expiration_seconds: int | None = None,
    signer: str = SIGNER,
    generate_name: bool = False,
) -> dict[str, object]:
    """The ``certificates.k8s.io/v1`` CertificateSigningRequest object to create. With
    ``generate_name`` the apiserver appends a random suffix to ``name`` (a new name per request,
    so a restart never collides with a CSR still being cleaned up)."""
    spec: dict[str, object] = {
        "request": base64.b64encode(csr_pem).decode("ascii"),
        "signerName": signer,
        "usages": list(USAGES),
    }
    if expiration_seconds is not None:
        spec["expirationSeconds"] = expiration_seconds
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": name} if generate_name else {"name": name},
        "spec": spec,
    }


def csr_common_names(csr_pem: bytes) -> list[str]:
    """The subject CNs of a PEM certificate request ([] when it does not parse)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        return []
    return [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def serving_csr_problems(
    csr_pem: bytes,
    node_name: str,
    allowed_ips: Sequence[str],
    allowed_dns: Sequence[str] = (),
) -> list[str]:
    """Why a CSR is not a well-formed serving CSR for ``node_name`` (empty: it is).

    For an opt-in approver that signs only its own node's requests: subject exactly
    ``CN=system:node:<node>, O=system:nodes``, SANs only the node's addresses and DNS names, no
    email/URI SANs, no CA bit, a valid self-signature.
    """
    problems: list[str] = []
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        return [f"not a PEM certificate request: {exc}"]
    if not csr.is_signature_valid:
        problems.append("signature does not verify")
    cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if cns != [f"system:node:{node_name}"]:
        problems.append(f"subject CN {cns} is not system:node:{node_name}")
    if orgs != [NODE_GROUP]:
        problems.append(f"subject O {orgs} is not [{NODE_GROUP}]")
    other = [a.oid.dotted_string for a in csr.subject
             if a.oid not in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME)]
    if other:
        problems.append(f"subject has attributes besides CN and O: {other}")
    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        pass
    else:
        if constraints.ca:
            problems.append("requests a CA certificate")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [*problems, "no subjectAltName"]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    dns = san.get_values_for_type(x509.DNSName)
    if not ips and not dns:
        problems.append("no IP or DNS SAN")
    if len(san) != len(ips) + len(dns):
        problems.append("SANs other than IP addresses and DNS names (email, URI, ...) are forbidden")
    stray = sorted(set(ips) - {str(ipaddress.ip_address(a)) for a in allowed_ips})
    if stray:
        problems.append(f"IP SANs {stray} are not addresses of node {node_name}")
    stray_dns = sorted(set(dns) - set(allowed_dns))
    if stray_dns:
        problems.append(f"DNS SANs {stray_dns} are not names of node {node_name}")
    return problems


def self_signed(
    key: PrivateKey,
    identity: ServingIdentity,
    *,
    lifetime: dt.timedelta = SELF_SIGNED_LIFETIME,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed serving certificate (the kubelet's default without TLS bootstrap)."""
    now = now or dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(identity.subject())
        .issuer_name(identity.subject())
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(identity.san(), critical=False)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def write_pair(cert: x509.Certificate | bytes, key: PrivateKeyTypes, cert_path: Path, key_path: Path) -> None:
    """Write the key (0600) and certificate atomically, key first so a reader never pairs a
    new certificate with an old key."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.PEM)
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, cert_pem, 0o644)


def write_combined(chain_pem: bytes, key: PrivateKeyTypes, path: Path) -> None:
    """Certificate chain and key in one PEM file (0600), replaced in one atomic rename, so a
    reader never sees a certificate with another certificate's key. Load it with
    ``load_pair(path, path)`` or ``ServingTLS(path, path, ...)``."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(path, chain_pem.rstrip(b"\n") + b"\n" + key_pem, 0o600)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """Load and check that the key belongs to the (first) certificate. Keys from config files
    may be RSA as well; only the keys we generate ourselves are ECDSA."""
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ValueError(f"{key_path} is not the key of the certificate in {cert_path}")
    return cert, key


def renewal_time(cert: x509.Certificate, fraction: float = RENEW_FRACTION) -> dt.datetime:
    """When to request a new certificate: ``fraction`` of the way through its validity."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction


def needs_renewal(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return now >= renewal_time(cert)


def identity_problems(cert: x509.Certificate, identity: ServingIdentity) -> list[str]:
    """Why ``cert`` does not serve ``identity`` (empty: it does): subject CN/O and exactly the
    identity's IP and DNS SANs. A node whose InternalIP changed needs a new certificate."""
    problems: list[str] = []
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [identity.common_name]:
        problems.append(f"CN {cns} is not {identity.common_name}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [*problems, "no subjectAltName"]
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ipaddress.ip_address(a)) for a in identity.ip_addresses}
    if ips != want_ips:
        problems.append(f"IP SANs {sorted(ips)} are not {sorted(want_ips)}")
    if set(san.get_values_for_type(x509.DNSName)) != set(identity.dns_names):
        problems.append(f"DNS SANs are not {sorted(identity.dns_names)}")
    return problems

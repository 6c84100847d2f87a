"""The testbed's PKI, generated with `cryptography`, and the kubeconfigs built on it.

Layout of pki_dir (PEM files; *.key are 0600):
  ca.crt/ca.key                        cluster CA; also the controller-manager's CSR signing key pair
  apiserver.crt/.key                   serving cert: 127.0.0.1, localhost, 10.0.0.1, kubernetes[.default[.svc[.cluster.local]]]
  apiserver-kubelet-client.crt/.key    what the apiserver presents to kubelets (CN=kube-apiserver-kubelet-client)
  sa.key/sa.pub                        service-account token signing pair
  admin.crt/.key                       O=system:masters
  controller-manager.crt/.key          CN=system:kube-controller-manager
  scheduler.crt/.key                   CN=system:kube-scheduler
  front-proxy-ca.crt/.key              aggregation-layer CA (kubeadm's layout), signs front-proxy-client
  front-proxy-client.crt/.key          the apiserver's identity towards aggregated API servers
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The apiserver→kubelet client identity; bound to system:kubelet-api-admin by the testbed's RBAC bootstrap.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CLUSTER_IP_RANGE
CLUSTER_NAME = "vnode-testbed"
CERT_VALIDITY = dt.timedelta(days=3650)  # a test cluster must never expire under a long-lived checkout
RSA_BITS = 2048  # what kubeadm uses; fast enough to generate all keys in about a second


@dataclass(frozen=True)
class ClientCert:
    name: str  # file stem
    cn: str
    orgs: tuple[str, ...] = ()


CLIENTS = (
    ClientCert("admin", "vnode-testbed-admin", ("system:masters",)),
    ClientCert("controller-manager", "system:kube-controller-manager"),
    ClientCert("scheduler", "system:kube-scheduler"),
    ClientCert("apiserver-kubelet-client", KUBELET_CLIENT_USER),
)

KUBECONFIGS = {"admin": "admin", "controller-manager": "controller-manager", "scheduler": "scheduler"}


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(**on: bool) -> x509.KeyUsage:
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{f: on.get(f, False) for f in flags})


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + CERT_VALIDITY)
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    cn: str,
    orgs: tuple[str, ...],
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    b = (
        _builder(_name(cn, orgs), ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def _ca(cn: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    name = _name(cn)
    cert = (
        _builder(name, name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def apiserver_sans() -> list[x509.GeneralName]:
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    ips = ["127.0.0.1", KUBERNETES_SERVICE_IP]
    return [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]


FRONT_PROXY_CLIENT_CN = "front-proxy-client"


def expected_files(pki: Path) -> list[Path]:
    stems = ["ca", "apiserver", "sa", "front-proxy-ca", "front-proxy-client"] + [c.name for c in CLIENTS]
    files = [pki / "sa.pub"]
    for s in stems:
        files.append(pki / f"{s}.key")
        if s != "sa":
            files.append(pki / f"{s}.crt")
    return files


def _complete(pki: Path) -> bool:
    if not all(p.exists() for p in expected_files(pki)):
        return False

    def load(stem: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((pki / f"{stem}.crt").read_bytes())

    try:
        ca = load("ca")
        for stem in ["apiserver"] + [c.name for c in CLIENTS]:
            load(stem).verify_directly_issued_by(ca)
        load(FRONT_PROXY_CLIENT_CN).verify_directly_issued_by(load("front-proxy-ca"))
    except (ValueError, TypeError, InvalidSignature):  # a half-regenerated directory: start over
        return False
    return True


def ensure_pki(pki: Path) -> bool:
    """Create the whole PKI unless a complete, consistent one is already there. True if created."""
    if _complete(pki):
        return False
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o755)  # certificates are public; keys inside are 0600
    ca_cert, ca_key = _ca("vnode-testbed-ca")
    _write_cert(pki / "ca.crt", ca_cert)
    _write_key(pki / "ca.key", ca_key)

    fp_cert, fp_key = _ca("vnode-testbed-front-proxy-ca")
    _write_cert(pki / "front-proxy-ca.crt", fp_cert)
    _write_key(pki / "front-proxy-ca.key", fp_key)
    cert, key = _leaf(fp_cert, fp_key, FRONT_PROXY_CLIENT_CN, (), ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(pki / "front-proxy-client.crt", cert)
    _write_key(pki / "front-proxy-client.key", key)

    cert, key = _leaf(ca_cert, ca_key, "kube-apiserver", (), ExtendedKeyUsageOID.SERVER_AUTH, apiserver_sans())
    _write_cert(pki / "apiserver.crt", cert)
    _write_key(pki / "apiserver.key", key)

    for client in CLIENTS:
        cert, key = _leaf(ca_cert, ca_key, client.cn, client.orgs, ExtendedKeyUsageOID.CLIENT_AUTH)
        _write_cert(pki / f"{client.name}.crt", cert)
        _write_key(pki / f"{client.name}.key", key)

    sa = _new_key()
    _write_key(pki / "sa.key", sa)
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return True


def kubeconfig(server: str, pki: Path, stem: str, user: str) -> dict:
    """A self-contained kubeconfig (certificates embedded) for the client cert `stem`."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{stem}.crt"),
                    "client-key-data": b64(pki / f"{stem}.key"),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def write_kubeconfigs(server: str, pki: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, user in KUBECONFIGS.items():
        path = out_dir / f"{stem}.kubeconfig"
        text = yaml.safe_dump(kubeconfig(server, pki, stem, user), sort_keys=False)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        path.with_suffix(".tmp").replace(path)

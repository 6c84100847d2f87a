"""The serving-certificate policy: mode choice, renewal time, file hot reload, the self-signed
cache, and the CSR mode against an in-process signer. TLS is checked by real handshakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vnode.kubelet import certs
from vnode.kubelet.cert_manager import (
    CURRENT_FILE,
    SELF_SIGNED_FILE,
    CertMode,
    CertPolicy,
    ServingCertManager,
    choose_mode,
    next_renewal,
)

IDENTITY = certs.ServingIdentity("hpc-node", ("127.0.0.1",))
NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC)


async def served_certificate(manager: ServingCertManager) -> x509.Certificate:
    """What a client sees when it connects now (the context a new connection gets)."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=manager.tls.context())
    try:
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def next_rotation(manager: ServingCertManager) -> None:
    await asyncio.wait_for(manager.changed.wait(), 10)


# ---- policy --------------------------------------------------------------------------------------


def test_files_win_then_disable_csr_then_csr_is_the_default() -> None:
    assert choose_mode("/etc/kubelet.crt", disable_csr=True) is CertMode.FILES
    assert choose_mode("", disable_csr=True) is CertMode.SELF_SIGNED
    assert choose_mode("", disable_csr=False) is CertMode.CSR


def test_renewal_is_at_80_percent_of_the_lifetime() -> None:
    cert = certs.self_signed(certs.generate_key(), IDENTITY, lifetime=dt.timedelta(days=10), now=NOW)
    start = NOW - certs.CLOCK_SKEW
    assert next_renewal(cert, NOW, 0.8) == start + (cert.not_valid_after_utc - start) * 0.8


def test_a_certificate_already_past_80_percent_is_not_renewed_in_a_tight_loop() -> None:
    cert = certs.self_signed(certs.generate_key(), IDENTITY, lifetime=dt.timedelta(days=10), now=NOW)
    late = NOW + dt.timedelta(days=9)
    assert next_renewal(cert, late, 0.8) == late + dt.timedelta(minutes=1)
    nearly_expired = cert.not_valid_after_utc - dt.timedelta(seconds=20)
    assert next_renewal(cert, nearly_expired, 0.8) == nearly_expired + dt.timedelta(seconds=10)


def test_csr_mode_without_a_requester_is_a_wiring_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CertificateRequester"):
        ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path))


# ---- files ---------------------------------------------------------------------------------------


def issue_to(ca: trustme.CA, cert_file: Path, key_file: Path) -> x509.Certificate:
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(key_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


async def test_replaced_certificate_files_are_served_without_a_restart(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    ca = trustme.CA()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = issue_to(ca, cert_file, key_file)
    policy = CertPolicy(CertMode.FILES, IDENTITY, tmp_path / "dir", cert_file=cert_file,
                        key_file=key_file, file_check_interval=0.05)
    manager = ServingCertManager(policy)
    await manager.start()
    assert await served_certificate(manager) == first
    running.append(asyncio.create_task(manager.run()))
    second = issue_to(ca, cert_file, key_file)
    await next_rotation(manager)
    assert await served_certificate(manager) == second
    assert manager.source == "files"


async def test_a_half_written_pair_keeps_the_old_certificate_until_it_is_complete(
    tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = issue_to(ca, cert_file, key_file)
    manager = ServingCertManager(CertPolicy(CertMode.FILES, IDENTITY, tmp_path, cert_file=cert_file,
                                            key_file=key_file, file_check_interval=3600))
    await manager.start()
    running.append(asyncio.create_task(manager.run()))
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))  # the new certificate, the old key
    manager.renew_now()
    async with asyncio.timeout(10):
        while "not reloading" not in caplog.text:
            await asyncio.sleep(0.01)
    assert manager.rotations == 0 and await served_certificate(manager) == first
    leaf.private_key_pem.write_to_path(str(key_file))
    manager.renew_now()
    await next_rotation(manager)
    assert await served_certificate(manager) == x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


async def test_files_that_do_not_match_fail_at_start(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue_to(ca, cert_file, key_file)
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(key_file))
    manager = ServingCertManager(CertPolicy(CertMode.FILES, IDENTITY, tmp_path, cert_file=cert_file,
                                            key_file=key_file))
    with pytest.raises(ValueError, match="is not the key of the certificate"):
        await manager.start()


# ---- self-signed ---------------------------------------------------------------------------------


async def test_self_signed_certificate_is_kept_across_restarts(tmp_path: Path) -> None:
    policy = CertPolicy(CertMode.SELF_SIGNED, IDENTITY, tmp_path)
    first = ServingCertManager(policy)
    await first.start()
    assert (tmp_path / SELF_SIGNED_FILE).stat().st_mode & 0o777 == 0o600
    again = ServingCertManager(policy)
    await again.start()
    assert again.certificate == first.certificate
    assert await served_certificate(again) == first.certificate


async def test_a_cached_certificate_for_another_address_is_replaced(tmp_path: Path) -> None:
    first = ServingCertManager(CertPolicy(CertMode.SELF_SIGNED, IDENTITY, tmp_path))
    await first.start()
    moved = certs.ServingIdentity("hpc-node", ("10.9.8.7",))
    again = ServingCertManager(CertPolicy(CertMode.SELF_SIGNED, moved, tmp_path))
    await again.start()
    assert again.certificate != first.certificate
    assert certs.identity_problems(await served_certificate(again), moved) == []


async def test_renewing_a_self_signed_certificate_makes_a_new_one(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    manager = ServingCertManager(CertPolicy(CertMode.SELF_SIGNED, IDENTITY, tmp_path))
    await manager.start()
    before = manager.certificate
    running.append(asyncio.create_task(manager.run()))
    manager.renew_now()
    await next_rotation(manager)
    assert manager.certificate != before
    assert await served_certificate(manager) == manager.certificate


# ---- CSR -----------------------------------------------------------------------------------------


class LocalSigner:
    """Signs CSRs with a CA of its own, as the controller-manager's csrsigning would."""

    def __init__(self, lifetime: dt.timedelta = dt.timedelta(days=1)) -> None:
        self.key = certs.generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cluster CA")])
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.key, hashes.SHA256()))
        self.lifetime = lifetime
        self.requests: list[x509.CertificateSigningRequest] = []
        self.release = asyncio.Event()
        self.release.set()
        self.wrong_key = False

    async def request(self, csr_pem: bytes) -> bytes:
        await self.release.wait()
        csr = x509.load_pem_x509_csr(csr_pem)
        self.requests.append(csr)
        public_key = certs.generate_key().public_key() if self.wrong_key else csr.public_key()
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.ca.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + self.lifetime)
                .add_extension(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM) + self.ca.public_bytes(serialization.Encoding.PEM)


async def test_csr_mode_serves_self_signed_until_the_issued_certificate_arrives(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    signer = LocalSigner()
    signer.release.clear()  # an admin has not approved yet
    manager = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), signer)
    await manager.start()
    assert manager.source == "bootstrap"
    bootstrap = await served_certificate(manager)
    assert bootstrap.issuer == bootstrap.subject
    running.append(asyncio.create_task(manager.run()))
    signer.release.set()
    await next_rotation(manager)
    issued = await served_certificate(manager)
    assert manager.source == "csr" and issued.issuer == signer.ca.subject
    assert certs.identity_problems(issued, IDENTITY) == []
    assert signer.requests[0].is_signature_valid
    on_disk, _ = certs.load_pair(tmp_path / CURRENT_FILE, tmp_path / CURRENT_FILE)
    assert on_disk == issued and (tmp_path / CURRENT_FILE).stat().st_mode & 0o777 == 0o600


async def test_an_issued_certificate_is_reused_after_a_restart_without_a_new_csr(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    signer = LocalSigner()
    first = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), signer)
    await first.start()
    running.append(asyncio.create_task(first.run()))
    await next_rotation(first)
    running.pop().cancel()
    again = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), signer)
    await again.start()
    assert again.source == "csr" and again.certificate == first.certificate
    assert len(signer.requests) == 1


async def test_renewal_uses_a_new_key_and_a_new_csr(tmp_path: Path, running: list[asyncio.Task[None]]) -> None:
    signer = LocalSigner()
    manager = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), signer)
    await manager.start()
    running.append(asyncio.create_task(manager.run()))
    await next_rotation(manager)
    first = await served_certificate(manager)
    manager.renew_now()
    await next_rotation(manager)
    second = await served_certificate(manager)
    assert len(signer.requests) == 2
    assert second.serial_number != first.serial_number
    assert second.public_key().public_numbers() != first.public_key().public_numbers()  # type: ignore[union-attr]


async def test_an_expired_cached_certificate_is_not_served(tmp_path: Path) -> None:
    key = certs.generate_key()
    old = certs.self_signed(key, IDENTITY, lifetime=dt.timedelta(days=1), now=NOW - dt.timedelta(days=30))
    certs.write_combined(certs.pem(old), key, tmp_path / CURRENT_FILE)
    manager = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), LocalSigner())
    await manager.start()
    assert manager.source == "bootstrap" and manager.certificate != old


async def test_a_certificate_for_another_key_is_refused(
    tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    signer = LocalSigner()
    signer.wrong_key = True
    manager = ServingCertManager(CertPolicy(CertMode.CSR, IDENTITY, tmp_path), signer)
    await manager.start()
    running.append(asyncio.create_task(manager.run()))
    for _ in range(200):
        if "not for the key we generated" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "not for the key we generated" in caplog.text
    assert manager.source == "bootstrap" and not (tmp_path / CURRENT_FILE).exists()

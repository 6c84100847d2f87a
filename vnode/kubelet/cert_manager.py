"""Which serving certificate the kubelet port presents, and keeping it fresh.

interLink's order of precedence, same config keys:

1. ``files``: ``KubeletCertFile`` + ``KubeletKeyFile``. Re-read when either file changes
   (cert-manager, a Secret volume or an admin replaces them), checked every few seconds; a pair
   caught half-written is retried on the next check while the old one keeps serving.
2. ``self-signed``: ``DisableCSR: true``. Generated once, kept in the cert directory, and
   regenerated at 80 % of its lifetime.
3. ``csr`` (the default): a ``kubernetes.io/kubelet-serving`` CertificateSigningRequest
   (:mod:`vnode.kube.csr`). Until the first one is issued (it may wait for an admin), the port
   serves a self-signed certificate, so a cluster that does not verify kubelet certificates (the
   apiserver's default) has ``kubectl logs`` at once. The issued chain and its key are kept in the
   cert directory in one file (replaced atomically) and reused after a restart while they are
   valid for this node; a new key and CSR are made at 80 % of the lifetime.

Rotation swaps the live :class:`~vnode.kubelet.tls.ServingTLS`: new connections get the new
certificate, established ones keep theirs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from vnode.kubelet import certs
from vnode.kubelet.tls import ServingTLS

log = logging.getLogger(__name__)

# The kubelet's file name for its current serving certificate+key (--cert-dir).
CURRENT_FILE = "kubelet-server-current.pem"
SELF_SIGNED_FILE = "kubelet-server-self-signed.pem"
# 5 s: a replaced certificate file is in use within seconds; a stat of two files is nothing.
FILE_CHECK_INTERVAL = 5.0
# Long sleeps are cut into pieces so a suspended host or a clock step is noticed within an hour.
MAX_SLEEP = 3600.0
# Never renew more often than this (a signer handing out certificates already past 80 % would
# otherwise cause a tight renew loop); halved for certificates that live shorter than twice this.
MIN_RENEW_DELAY = dt.timedelta(minutes=1)


class CertMode(enum.StrEnum):
    FILES = "files"
    CSR = "csr"
    SELF_SIGNED = "self-signed"


def choose_mode(cert_file: str, disable_csr: bool) -> CertMode:
    """interLink's precedence: configured files, then DisableCSR (self-signed), else CSR."""
    if cert_file:
        return CertMode.FILES
    if disable_csr:
        return CertMode.SELF_SIGNED
    return CertMode.CSR


class CertificateRequester(Protocol):
    """Gets a CSR signed (``vnode.kube.csr.CsrRequester``): PEM request in, PEM chain out."""

    async def request(self, csr_pem: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CertPolicy:
    mode: CertMode
    identity: certs.ServingIdentity
    cert_dir: Path
    client_ca_file: Path | None = None
    cert_file: Path | None = None  # files mode
    key_file: Path | None = None
    renew_fraction: float = certs.RENEW_FRACTION
    file_check_interval: float = FILE_CHECK_INTERVAL


def next_renewal(cert: x509.Certificate, now: dt.datetime, fraction: float) -> dt.datetime:
    """When to replace ``cert``: at ``fraction`` of its lifetime, but not sooner than
    MIN_RENEW_DELAY from now (or half its remaining life, if that is shorter)."""
    due = certs.renewal_time(cert, fraction)
    floor = min(MIN_RENEW_DELAY, max(dt.timedelta(0), cert.not_valid_after_utc - now) / 2)
    return max(due, now + floor)


@dataclass(frozen=True, slots=True)
class _FileStamp:
    """What changes when a certificate file is replaced or rewritten."""

    cert: tuple[int, int, int]
    key: tuple[int, int, int]


def _stamp(cert_file: Path, key_file: Path) -> _FileStamp | None:
    try:
        c, k = os.stat(cert_file), os.stat(key_file)
    except OSError:
        return None
    return _FileStamp((c.st_ino, c.st_size, c.st_mtime_ns), (k.st_ino, k.st_size, k.st_mtime_ns))


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ServingCertManager:
    """Owns the serving certificate. :meth:`start` gives the first one without waiting for the
    network; :meth:`run` keeps it fresh forever."""

    def __init__(
        self,
        policy: CertPolicy,
        requester: CertificateRequester | None = None,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if policy.mode is CertMode.CSR and requester is None:
            raise ValueError("the csr certificate mode needs a CertificateRequester")
        if policy.mode is CertMode.FILES and (policy.cert_file is None or policy.key_file is None):
            raise ValueError("the files certificate mode needs cert_file and key_file")
        self.policy = policy
        self._requester = requester
        self._clock = clock
        self._tls: ServingTLS | None = None
        self._renew = asyncio.Event()
        self._stamp: _FileStamp | None = None  # files mode: the pair being served
        self.certificate: x509.Certificate | None = None
        self.source = ""  # files | csr | self-signed | bootstrap (self-signed until a CSR is issued)
        self.rotations = 0
        self.changed = asyncio.Event()  # set (and replaced) on every rotation; for tests and logs

    @property
    def tls(self) -> ServingTLS:
        assert self._tls is not None, "start() first"
        return self._tls

    def renew_now(self) -> None:
        """Replace the certificate now (files mode: re-read the files now)."""
        self._renew.set()

    # ---- start ----------------------------------------------------------------------------

    async def start(self) -> ServingTLS:
        # File reads, key generation and SSL context loading block briefly: done in a thread so
        # the event loop keeps serving.
        mode = self.policy.mode
        if mode is CertMode.FILES:
            assert self.policy.cert_file is not None and self.policy.key_file is not None
            cert_file, key_file = self.policy.cert_file, self.policy.key_file
            cert, _ = await asyncio.to_thread(certs.load_pair, cert_file, key_file)
            self._stamp = await asyncio.to_thread(_stamp, cert_file, key_file)
            await self._serve(cert, cert_file, key_file, "files")
        elif mode is CertMode.CSR and (cached := await asyncio.to_thread(self._cached, CURRENT_FILE)):
            log.info("serving the cached CSR-issued certificate %s", self._path(CURRENT_FILE))
            await self._serve(cached, self._path(CURRENT_FILE), self._path(CURRENT_FILE), "csr")
        else:
            await self._self_signed(reuse=True, bootstrap=mode is CertMode.CSR)
        return self.tls

    def _path(self, name: str) -> Path:
        return self.policy.cert_dir / name

    def _cached(self, name: str) -> x509.Certificate | None:
        """A certificate+key file from an earlier run, if it still serves this node."""
        path = self._path(name)
        if not path.exists():
            return None
        try:
            cert, _ = certs.load_pair(path, path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unusable %s: %s", path, exc)
            return None
        problems = certs.identity_problems(cert, self.policy.identity)
        if cert.not_valid_after_utc <= self._clock():
            problems.append("expired")
        if problems:
            log.info("not reusing %s: %s", path, "; ".join(problems))
            return None
        return cert

    async def _self_signed(self, *, reuse: bool, bootstrap: bool) -> None:
        path = self._path(SELF_SIGNED_FILE)
        cert = await asyncio.to_thread(self._cached, SELF_SIGNED_FILE) if reuse else None
        if cert is None or certs.needs_renewal(cert, self._clock()):
            cert = await asyncio.to_thread(self._write_self_signed, path)
        if bootstrap:
            log.warning("serving a self-signed certificate until the kubelet-serving CSR is "
                        "issued: clients that verify the kubelet will refuse it until then")
        await self._serve(cert, path, path, "bootstrap" if bootstrap else "self-signed")

    def _write_self_signed(self, path: Path) -> x509.Certificate:
        key = certs.generate_key()
        cert = certs.self_signed(key, self.policy.identity, now=self._clock())
        certs.write_combined(certs.pem(cert), key, path)
        return cert

    async def _serve(self, cert: x509.Certificate, cert_file: Path, key_file: Path, source: str) -> None:
        if self._tls is None:
            self._tls = await asyncio.to_thread(ServingTLS, cert_file, key_file, self.policy.client_ca_file)
        else:
            await asyncio.to_thread(self._tls.rotate, cert_file, key_file)
            self.rotations += 1
            log.info("kubelet serving certificate rotated (%s): serial %x, valid until %s",
                     source, cert.serial_number, cert.not_valid_after_utc.isoformat())
        self.certificate = cert
        self.source = source
        self.changed.set()
        self.changed = asyncio.Event()

    # ---- keeping it fresh -----------------------------------------------------------------

    async def run(self) -> None:
        if self._tls is None:
            await self.start()
        mode = self.policy.mode
        if mode is CertMode.FILES:
            await self._watch_files()
        elif mode is CertMode.SELF_SIGNED:
            while True:
                await self._until(self._renewal_due())
                await self._self_signed(reuse=False, bootstrap=False)
        else:
            while True:
                if self.source == "csr":
                    await self._until(self._renewal_due())
                await self._request_certificate()

    def _renewal_due(self) -> dt.datetime:
        assert self.certificate is not None
        return next_renewal(self.certificate, self._clock(), self.policy.renew_fraction)

    async def _until(self, when: dt.datetime) -> None:
        """Sleep until ``when`` or until :meth:`renew_now`."""
        while not self._renew.is_set():
            remaining = (when - self._clock()).total_seconds()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._renew.wait(), min(remaining, MAX_SLEEP))
            except TimeoutError:
                continue
        self._renew.clear()

    async def _request_certificate(self) -> None:
        assert self._requester is not None
        key = certs.generate_key()
        csr_pem = certs.build_csr(key, self.policy.identity)
        chain = await self._requester.request(csr_pem)
        path = self._path(CURRENT_FILE)
        try:
            cert = await asyncio.to_thread(self._write_issued, chain, key, path)
        except ValueError as exc:
            # A signer answering with something unusable is not going to improve by asking at
            # once again; the requester's own backoff does not apply here, so wait a little.
            log.error("the issued certificate is unusable (%s); requesting again in 60s", exc)
            await asyncio.sleep(60)
            return
        await self._serve(cert, path, path, "csr")

    def _write_issued(self, chain: bytes, key: certs.PrivateKey, path: Path) -> x509.Certificate:
        cert = x509.load_pem_x509_certificates(chain)[0]
        if _spki(cert.public_key()) != _spki(key.public_key()):
            raise ValueError("the certificate is not for the key we generated")
        problems = certs.identity_problems(cert, self.policy.identity)
        if problems:
            log.warning("the signer changed the requested identity: %s", "; ".join(problems))
        certs.write_combined(chain, key, path)
        return cert

    async def _watch_files(self) -> None:
        assert self.policy.cert_file is not None and self.policy.key_file is not None
        cert_file, key_file = self.policy.cert_file, self.policy.key_file
        failed_stamp: _FileStamp | None = None
        while True:
            try:
                await asyncio.wait_for(self._renew.wait(), self.policy.file_check_interval)
            except TimeoutError:
                pass
            forced = self._renew.is_set()
            self._renew.clear()
            stamp = await asyncio.to_thread(_stamp, cert_file, key_file)
            if stamp is None or (stamp == self._stamp and not forced):
                continue
            try:
                cert, _ = await asyncio.to_thread(certs.load_pair, cert_file, key_file)
                await self._serve(cert, cert_file, key_file, "files")
            except (OSError, ValueError) as exc:  # mid-rewrite, or a real mistake: keep serving
                if stamp != failed_stamp:
                    log.warning("not reloading %s / %s yet: %s", cert_file, key_file, exc)
                failed_stamp = stamp
                continue
            self._stamp = stamp

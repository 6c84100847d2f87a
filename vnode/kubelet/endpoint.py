"""The kubelet endpoint as one part of the agent: what the composition root starts and stops.

:func:`start_kubelet_endpoint` picks the serving-certificate mode from the settings, gets a first
certificate without waiting for the network, starts the HTTPS server on the kubelet port, and
runs the background work as named, supervised tasks:

* ``kubelet-certificates``: keeps the serving certificate fresh (CSR loop, file reload, or
  self-signed renewal; :mod:`vnode.kubelet.cert_manager`);
* ``csr-approver`` (opt-in): approves this node's own serving CSRs (:mod:`vnode.kube.csr`).

A supervised task that fails is logged and restarted after a capped backoff; it never takes the
server down (a stale certificate still serves until it expires).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vnode.kube.client import KubeClient
from vnode.kube.csr import (
    ApprovalPolicy,
    CsrApi,
    CsrApprover,
    CsrRequester,
    UserIdentity,
    whoami,
)
from vnode.kube.errors import KubeError
from vnode.kube.retry import Backoff
from vnode.kube.reviews import ApiReviewClient
from vnode.kubelet import certs
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.cert_manager import (
    CertMode,
    CertPolicy,
    ServingCertManager,
    choose_mode,
)
from vnode.kubelet.plugin_backends import (
    CachedPods,
    PluginExec,
    PluginExecClient,
    PluginLogs,
    PluginLogsClient,
    PluginUsage,
    PluginUsageClient,
    PodCache,
)
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.settings import Settings

log = logging.getLogger(__name__)

# Restarting a failed background task: 1 s doubling to 5 min (an RBAC mistake is not fixed in
# seconds; an apiserver restart is).
SUPERVISOR_BACKOFF = Backoff(base=1.0, factor=2.0, cap=300.0)
# A task that ran this long before failing starts its backoff from the beginning again.
HEALTHY_RUN_SECONDS = 600.0


def default_cert_dir(node_name: str) -> Path:
    """interLink keeps its certificates in /tmp/certs; one directory per node keeps several
    agents on one host apart."""
    return Path(tempfile.gettempdir()) / "vnode-certs" / node_name


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """Endpoint knobs that are not (yet) agent settings."""

    # Off by default: approving certificates is a cluster-admin decision to delegate explicitly.
    approve_own_csr: bool = False
    cert_dir: Path | None = None  # None: default_cert_dir(node)
    # Client certificates are checked against this CA. None: the CA the agent's apiserver client
    # trusts, which signs the apiserver's kubelet-client certificate in kubeadm-style clusters.
    client_ca_file: Path | None = None
    # None: the signer's default (--cluster-signing-duration, one year by default).
    csr_expiration_seconds: int | None = None
    renew_fraction: float = certs.RENEW_FRACTION

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointOptions:
        """``KubeletCSRAutoApprove``, ``KubeletCertDir`` and ``KubeletClientCAFile``."""
        k = settings.kubelet
        return cls(
            approve_own_csr=k.csr_auto_approve,
            cert_dir=Path(k.cert_dir) if k.cert_dir else None,
            client_ca_file=Path(k.client_ca_file) if k.client_ca_file else None,
        )


class PluginBackend(PluginLogsClient, PluginExecClient, Protocol):
    """What the endpoint needs of ``plugin_client.client.PluginClient``: logs and exec (and
    ``usage``, when it has it, for /metrics/resource and /stats/summary)."""


class KubeletEndpoint:
    """The running endpoint: its server, certificate manager, optional approver and tasks."""

    def __init__(self, server: KubeletServer, certificates: ServingCertManager,
                 requester: CsrRequester | None, approver: CsrApprover | None) -> None:
        self.server = server
        self.certificates = certificates
        self.requester = requester
        self.approver = approver
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the ephemeral one for port 0)."""
        return self.server.port

    @property
    def mode(self) -> CertMode:
        return self.certificates.policy.mode

    def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.tasks[name] = asyncio.create_task(_supervised(name, run), name=name)

    async def close(self) -> None:
        """Stop accepting connections, end open ones, stop the background tasks."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.server.close()


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await run()
            log.error("%s ended unexpectedly", name)
        except KubeError as err:  # the apiserver is down or refuses: no traceback needed
            log.warning("%s failed: %s", name, err)
        except Exception:
            log.exception("%s failed", name)
        if loop.time() - started >= HEALTHY_RUN_SECONDS:
            failures = 0
        delay = SUPERVISOR_BACKOFF.delay(failures)
        failures += 1
        log.info("restarting %s in %.0fs", name, delay)
        await asyncio.sleep(delay)


async def _identity(kube: KubeClient) -> UserIdentity | None:
    try:
        me = await whoami(kube)
    except KubeError as err:
        log.warning("cannot tell who this agent is yet (SelfSubjectReview failed: %s): stale CSRs "
                    "are recognised by name only; the approver keeps trying", err)
        return None
    log.info("the agent talks to the apiserver as %s", me.username)
    return me


def _client_ca(kube: KubeClient, options: EndpointOptions) -> Path | None:
    if options.client_ca_file is not None:
        return options.client_ca_file
    ca = kube.configuration.ssl_ca_cert
    if not ca:
        log.warning("no CA for client certificates (the apiserver client has none): the kubelet "
                    "port accepts bearer tokens only")
        return None
    return Path(ca)


async def start_kubelet_endpoint(
    settings: Settings,
    kube: KubeClient,
    pods: PodCache,
    plugin: PluginBackend,
    options: EndpointOptions | None = None,
) -> KubeletEndpoint:
    """Start serving the kubelet API for ``settings.node.name``; close() the result to stop.

    ``pods`` is the agent's pod cache (``PodController``), ``plugin`` its ``PluginClient``.
    Raises when the configured certificate files are unusable or the port cannot be bound.
    """
    options = options or EndpointOptions()
    node = settings.node.name
    mode = choose_mode(settings.kubelet.cert_file, settings.kubelet.disable_csr)
    identity = certs.ServingIdentity(node, (settings.node.internal_ip,))
    policy = CertPolicy(
        mode=mode,
        identity=identity,
        cert_dir=options.cert_dir or default_cert_dir(node),
        client_ca_file=_client_ca(kube, options),
        cert_file=Path(settings.kubelet.cert_file) if settings.kubelet.cert_file else None,
        key_file=Path(settings.kubelet.key_file) if settings.kubelet.key_file else None,
        renew_fraction=options.renew_fraction,
    )
    requester: CsrRequester | None = None
    me: UserIdentity | None = None
    approve = options.approve_own_csr and _may_approve(settings, mode)
    if mode is CertMode.CSR:
        me = await _identity(kube)
        requester = CsrRequester(CsrApi(kube), node, signer=settings.kubelet.csr_signer,
                                 expiration_seconds=options.csr_expiration_seconds, requester=me)
    certificates = ServingCertManager(policy, requester)
    await certificates.start()
    lookup = CachedPods(pods)
    server = KubeletServer(
        KubeletServerSettings(node_name=node, host=settings.kubelet.address,
                              port=settings.kubelet.port),
        tls=certificates.tls,
        authority=RequestAuthority(ApiReviewClient(kube), node),
        pods=lookup,
        logs=PluginLogs(lookup, plugin),
        execs=PluginExec(plugin),
        usage=PluginUsage(lookup, plugin) if isinstance(plugin, PluginUsageClient) else None,
    )
    await server.start()
    endpoint = KubeletEndpoint(server, certificates, requester, None)
    if approve:
        if me is not None:
            endpoint.approver = _approver(settings, kube, me)

        async def run_approver() -> None:
            if endpoint.approver is None:
                # The identity lookup failed at start: retried here (a failure is restarted by
                # the supervisor with backoff), and shared with the requester's cleanup.
                found = await whoami(kube)
                endpoint.approver = _approver(settings, kube, found)
                if requester is not None and requester.requester is None:
                    requester.requester = found
            await endpoint.approver.run()

        endpoint._supervise("csr-approver", run_approver)
    endpoint._supervise("kubelet-certificates", certificates.run)
    log.info("kubelet endpoint for node %s on %s:%d, serving certificate: %s%s", node,
             settings.kubelet.address, endpoint.port, mode.value,
             ", approving its own CSRs" if approve else "")
    return endpoint


def _may_approve(settings: Settings, mode: CertMode) -> bool:
    if mode is not CertMode.CSR:
        log.warning("the CSR approver is on but the serving certificate comes from %s: "
                    "nothing to approve", mode.value)
        return False
    if settings.kubelet.csr_signer != certs.SIGNER:
        log.warning("the CSR approver only handles %s; signer %s is approved elsewhere",
                    certs.SIGNER, settings.kubelet.csr_signer)
        return False
    return True


def _approver(settings: Settings, kube: KubeClient, me: UserIdentity) -> CsrApprover:
    node = settings.node.name
    # SANs the agent may approve: the InternalIP it requests, and the node name as a DNS name.
    return CsrApprover(kube, ApprovalPolicy(node, me, (settings.node.internal_ip,), (node,)))

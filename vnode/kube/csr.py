"""CertificateSigningRequests for the kubelet serving certificate: request one, and (opt-in)
approve our own.

* :class:`CsrRequester` submits a ``certificates.k8s.io/v1`` CSR (generated name), first
  deleting our own stale *pending* ones, then waits for the signed certificate with a watch on
  that one object (a GET after each watch ends; capped backoff on errors: never a busy loop). A
  CSR that is denied, fails or disappears is re-created after a capped backoff.
* :class:`CsrApprover` is the opt-in approver: Kubernetes never auto-approves
  ``kubernetes.io/kubelet-serving`` CSRs, and third-party approvers only trust node identities,
  not the ServiceAccount an agent runs as. It approves **only** CSRs that
  :func:`approval_problems` finds nothing wrong with: the kubelet-serving signer, requested by
  the agent's own identity (as the apiserver saw it: ``spec.username``/``spec.uid`` set by the
  apiserver, compared with a SelfSubjectReview of our credentials), subject exactly
  ``CN=system:node:<this node>, O=system:nodes``, SANs only this node's InternalIP and name,
  usages from the kubelet-serving set, no CA bit. Everything else is left alone (not denied:
  an admin or another approver may own it).

RBAC (see ``vnode/kubelet/README.md``): create/get/list/watch/delete
``certificatesigningrequests``; for the approver also update
``certificatesigningrequests/approval`` and approve on ``signers``
``kubernetes.io/kubelet-serving``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.x509.oid import NameOID

from vnode.kube.client import KubeClient
from vnode.kube.errors import Conflict, Forbidden, Gone, KubeError, NotFound
from vnode.kube.informer import ADDED, MODIFIED, Informer
from vnode.kube.retry import Backoff
from vnode.kubelet import certs

log = logging.getLogger(__name__)

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
APPROVAL_REASON = "VnodeSelfApprove"
# The two usage sets the kubelet-serving signer accepts (Kubernetes docs, "Kubernetes signers").
ALLOWED_USAGE_SETS = (
    frozenset({"digital signature", "key encipherment", "server auth"}),
    frozenset({"digital signature", "server auth"}),
)
# Server-side watch timeout while waiting for a certificate: each reconnect re-reads the object,
# so a missed event costs at most this long.
WATCH_SECONDS = 300
# Re-creating a denied/failed CSR: start after 10 s (an admin who denied by mistake can approve
# the next one quickly), cap at 10 min so a deliberate denial is not answered with a CSR flood.
RECREATE_BACKOFF = Backoff(base=10.0, factor=2.0, cap=600.0)
# Watch failures while waiting (apiserver restarting, RBAC missing watch): 1 s up to 30 s.
WAIT_BACKOFF = Backoff(base=1.0, factor=2.0, cap=30.0)
# An approval that failed for a transient reason (after the client's own retries) is tried again
# this much later; an unchanged CSR produces no new watch event that would retry it.
APPROVAL_RETRY_SECONDS = 10.0
# How often "approve me" is repeated in the log while a CSR stays pending.
PENDING_HINT_SECONDS = 600.0

CsrObject = Mapping[str, Any]


# ---- pure views of CSR objects ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Who our credentials are, as the apiserver sees them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CsrState:
    kind: Literal["pending", "approved", "issued", "denied", "failed"]
    reason: str = ""
    message: str = ""
    certificate: bytes = b""  # PEM chain, when issued


def _conditions(obj: CsrObject) -> list[Mapping[str, Any]]:
    status = obj.get("status") or {}
    return [c for c in status.get("conditions") or [] if str(c.get("status", "True")) == "True"]


def csr_state(obj: CsrObject) -> CsrState:
    """Where a CSR stands. Denied/Failed win over a certificate (the signer never issues for
    those), an issued certificate over a bare Approved."""
    conditions = {str(c.get("type")): c for c in _conditions(obj)}
    for kind in ("Denied", "Failed"):
        if kind in conditions:
            c = conditions[kind]
            return CsrState("denied" if kind == "Denied" else "failed",
                            str(c.get("reason", "")), str(c.get("message", "")))
    encoded = (obj.get("status") or {}).get("certificate") or ""
    if encoded:
        try:
            return CsrState("issued", certificate=base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            return CsrState("failed", "BadCertificate", "status.certificate is not base64")
    if "Approved" in conditions:
        return CsrState("approved")
    return CsrState("pending")


def request_pem(obj: CsrObject) -> bytes:
    """The PEM CERTIFICATE REQUEST in ``spec.request`` (b"" if it is not valid base64)."""
    try:
        return base64.b64decode((obj.get("spec") or {}).get("request") or "", validate=True)
    except (binascii.Error, ValueError):
        return b""


def request_common_names(obj: CsrObject) -> list[str]:
    try:
        csr = x509.load_pem_x509_csr(request_pem(obj))
    except ValueError:
        return []
    return [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _name(obj: CsrObject) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """What the approver accepts: this node's serving certificate, asked for by us."""

    node_name: str
    requester: UserIdentity
    ip_addresses: tuple[str, ...]
    dns_names: tuple[str, ...] = ()


def approval_problems(obj: CsrObject, policy: ApprovalPolicy) -> list[str]:
    """Why the approver must not approve ``obj`` (empty: approve it)."""
    spec = obj.get("spec") or {}
    problems: list[str] = []
    if spec.get("signerName") != certs.SIGNER:
        problems.append(f"signer {spec.get('signerName')!r} is not {certs.SIGNER}")
    if spec.get("username") != policy.requester.username:
        problems.append(
            f"requested by {spec.get('username')!r}, not by this agent ({policy.requester.username})"
        )
    elif policy.requester.uid and spec.get("uid") != policy.requester.uid:
        problems.append(f"requester uid {spec.get('uid')!r} is not this agent's")
    usages = frozenset(str(u) for u in spec.get("usages") or ())
    if usages not in ALLOWED_USAGE_SETS:
        problems.append(f"usages {sorted(usages)} are not a kubelet-serving usage set")
    pem = request_pem(obj)
    if not pem:
        problems.append("spec.request is not base64")
    else:
        problems += certs.serving_csr_problems(
            pem, policy.node_name, policy.ip_addresses, policy.dns_names
        )
    if csr_state(obj).kind != "pending":
        problems.append(f"already {csr_state(obj).kind}")
    return problems


def names_another_node(obj: CsrObject, policy: ApprovalPolicy) -> bool:
    """True for a well-formed node CSR of some other node: none of this approver's business. In a
    cluster with many nodes every approver sees every CSR; only those about its own node (or
    malformed ones) are worth an INFO line."""
    pem = request_pem(obj)
    cns = certs.csr_common_names(pem) if pem else []
    return (len(cns) == 1 and cns[0].startswith(certs.NODE_USER_PREFIX)
            and cns[0] != certs.NODE_USER_PREFIX + policy.node_name)


def approved(obj: CsrObject, policy: ApprovalPolicy, now: dt.datetime) -> dict[str, Any]:
    """The object to PUT on the ``approval`` subresource."""
    body: dict[str, Any] = {**obj, "apiVersion": "certificates.k8s.io/v1",
                            "kind": "CertificateSigningRequest"}
    status = dict(body.get("status") or {})
    status["conditions"] = [*(status.get("conditions") or []), {
        "type": "Approved",
        "status": "True",
        "reason": APPROVAL_REASON,
        "message": (f"vnode agent {policy.requester.username} approved the serving certificate "
                    f"of its own node {policy.node_name}"),
        "lastUpdateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }]
    body["status"] = status
    return body


# ---- the apiserver side ----------------------------------------------------------------------


async def whoami(client: KubeClient) -> UserIdentity:
    """Our identity via SelfSubjectReview (v1 since Kubernetes 1.28, v1beta1 before). Needs no
    RBAC beyond the default ``system:basic-user``."""
    body = {"kind": "SelfSubjectReview", "metadata": {}}
    last: KubeError | None = None
    for version in ("v1", "v1beta1"):
        try:
            result = await client.post(
                f"/apis/authentication.k8s.io/{version}/selfsubjectreviews",
                {**body, "apiVersion": f"authentication.k8s.io/{version}"},
            )
        except NotFound as err:
            last = err
            continue
        info = ((result or {}).get("status") or {}).get("userInfo") or {}
        return UserIdentity(str(info.get("username", "")), str(info.get("uid", "")),
                            tuple(info.get("groups") or ()))
    assert last is not None
    raise last


class CsrApi:
    """The CSR calls we make, over the agent's apiserver adapter."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.post(CSR_PATH, manifest)
        return result

    async def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.get(f"{CSR_PATH}/{name}")
        return result

    async def list(self, signer: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = [("fieldSelector", f"spec.signerName={signer}"), ("limit", "500")]
            if cont:
                query.append(("continue", cont))
            page = await self.client.get(CSR_PATH, query=query)
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items

    async def delete(self, name: str) -> None:
        try:
            await self.client.delete(f"{CSR_PATH}/{name}")
        except NotFound:
            pass

    async def approve(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.put(f"{CSR_PATH}/{_name(body)}/approval", body)
        return result

    async def next_version(self, obj: CsrObject, timeout: int = WATCH_SECONDS) -> dict[str, Any] | None:
        """The object after its next change (None: deleted), or as it is after ``timeout``
        seconds without a change."""
        name = _name(obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        query = [("fieldSelector", f"metadata.name={name}"), ("watch", "1"),
                 ("resourceVersion", rv), ("timeoutSeconds", str(timeout))]
        # watch() is an async generator function; its declared AsyncIterator type hides aclose().
        events = cast(AsyncGenerator[dict[str, Any], None],
                      self.client.watch(CSR_PATH, query, inactivity_timeout=timeout + 30))
        try:
            async with contextlib.aclosing(events):  # returning mid-stream closes the request
                async for event in events:
                    if event.get("type") == "DELETED":
                        return None
                    if event.get("type") in (ADDED, MODIFIED):
                        return dict(event.get("object") or {})
        except Gone:
            pass  # our resourceVersion is too old: read the object fresh
        try:
            return await self.get(name)
        except NotFound:
            return None


@dataclass
class CsrRequester:
    """Requests serving certificates for one node and waits until they are issued."""

    api: CsrApi
    node_name: str
    signer: str = certs.SIGNER
    # None: the signer's default (--cluster-signing-duration, one year by default).
    expiration_seconds: int | None = None
    requester: UserIdentity | None = None
    clock: Callable[[], float] = time.monotonic
    last_created: str = ""  # the newest CSR we submitted (for logs and tests)

    @property
    def name_prefix(self) -> str:
        # generateName adds 5 characters; CSR names may have 253.
        return f"vnode-serving-{self.node_name}"[:240] + "-"

    async def request(self, csr_pem: bytes) -> bytes:
        """Submit ``csr_pem`` until a certificate is issued for it; return the PEM chain."""
        attempt = 0
        while True:
            await self.remove_stale()
            manifest = certs.csr_manifest(self.name_prefix, csr_pem, signer=self.signer,
                                          expiration_seconds=self.expiration_seconds,
                                          generate_name=True)
            obj = await self.api.create(manifest)
            name = _name(obj)
            self.last_created = name
            log.info("requested a serving certificate for node %s: CSR %s (signer %s); unless an "
                     "approver handles it: kubectl certificate approve %s", self.node_name, name,
                     self.signer, name)
            outcome = await self._wait(obj)
            if isinstance(outcome, bytes):
                log.info("CSR %s issued: serving certificate for node %s", name, self.node_name)
                return outcome
            delay = RECREATE_BACKOFF.delay(attempt)
            attempt += 1
            log.warning("%s; requesting a new one in %.0fs", outcome, delay)
            await asyncio.sleep(delay)

    async def _wait(self, obj: dict[str, Any]) -> bytes | str:
        """The issued certificate, or why this CSR will never give one."""
        name = _name(obj)
        hinted = self.clock()  # request() just logged how to approve it
        failures = 0
        current: dict[str, Any] | None = obj
        while True:
            if current is None:
                return f"CSR {name} was deleted before a certificate was issued"
            state = csr_state(current)
            if state.kind == "issued":
                return state.certificate
            if state.kind in ("denied", "failed"):
                return f"CSR {name} was {state.kind}: {state.reason}: {state.message}"
            if state.kind == "pending" and self.clock() - hinted >= PENDING_HINT_SECONDS:
                hinted = self.clock()
                log.warning("CSR %s for node %s still awaits approval: `kubectl certificate approve "
                            "%s`, or enable vnode's approver (KubeletCSRAutoApprove)", name,
                            self.node_name, name)
            try:
                current = await self.api.next_version(current)
                failures = 0
            except KubeError as err:
                delay = WAIT_BACKOFF.delay(failures)
                failures += 1
                log.warning("waiting for CSR %s: %s; retrying in %.0fs", name, err, delay)
                await asyncio.sleep(delay)

    async def remove_stale(self) -> None:
        """Delete our own CSRs for this node that are still pending: left over from an agent
        that restarted or gave up on them (they would otherwise wait for approval forever)."""
        try:
            items = await self.api.list(self.signer)
        except KubeError as err:
            log.warning("cannot list CSRs to clean up stale ones: %s", err)
            return
        for obj in items:
            if self._is_stale_own(obj):
                log.info("deleting stale pending CSR %s of node %s", _name(obj), self.node_name)
                try:
                    await self.api.delete(_name(obj))
                except KubeError as err:
                    log.warning("cannot delete stale CSR %s: %s", _name(obj), err)

    def _is_stale_own(self, obj: CsrObject) -> bool:
        if csr_state(obj).kind != "pending":
            return False
        if request_common_names(obj) != [f"system:node:{self.node_name}"]:
            return False
        username = (obj.get("spec") or {}).get("username")
        if self.requester is not None:
            return bool(username == self.requester.username)
        # Identity unknown: only the names we generate are ours for sure.
        return _name(obj).startswith(self.name_prefix)


class CsrApprover:
    """Approves this node's own serving CSRs (see the module docstring for the checks)."""

    def __init__(self, client: KubeClient, policy: ApprovalPolicy, *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.api = CsrApi(client)
        self.policy = policy
        self.clock = clock
        self.informer = Informer(client, CSR_PATH, self._on_event,
                                 field_selector=f"spec.signerName={certs.SIGNER}",
                                 name="csr-approver-informer")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._latest: dict[str, CsrObject] = {}
        self._queued: set[str] = set()
        # For logs and tests: what we approved, and why we left the others alone.
        self.approved: list[str] = []
        self.refused: dict[str, list[str]] = {}
        self.changed = asyncio.Event()

    def _on_event(self, etype: str, obj: dict[str, Any]) -> None:
        name = _name(obj)
        if etype not in (ADDED, MODIFIED) or csr_state(obj).kind != "pending":
            self._latest.pop(name, None)
            return
        self._latest[name] = obj
        if name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    async def run(self) -> None:
        log.info("CSR approver on for node %s: approving only its own kubelet-serving CSRs "
                 "requested by %s", self.policy.node_name, self.policy.requester.username)
        # Either task failing ends both (and run() raises): the caller supervises restarts.
        async with asyncio.TaskGroup() as group:
            group.create_task(self.informer.run(), name="csr-approver-informer")
            group.create_task(self._work(), name="csr-approver-worker")

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            obj = self._latest.pop(name, None)
            if obj is not None:
                await self._consider(obj)

    async def _consider(self, obj: CsrObject) -> None:
        name = _name(obj)
        for _ in range(3):  # a Conflict means someone changed it: decide again on the new version
            problems = approval_problems(obj, self.policy)
            if problems:
                if self.refused.get(name) != problems:
                    level = logging.DEBUG if names_another_node(obj, self.policy) else logging.INFO
                    log.log(level, "not approving CSR %s: %s", name, "; ".join(problems))
                self.refused[name] = problems
                self._notify()
                return
            try:
                await self.api.approve(approved(obj, self.policy, self.clock()))
            except Conflict:
                try:
                    obj = await self.api.get(name)
                except NotFound:
                    return
                continue
            except NotFound:
                return
            except Forbidden as err:
                log.error("cannot approve CSR %s (RBAC: update certificatesigningrequests/approval "
                          "and approve on signers %s are needed): %s", name, certs.SIGNER, err)
                self.refused[name] = [f"approval forbidden: {err}"]
                self._notify()
                return
            except KubeError as err:
                log.warning("approving CSR %s failed: %s; trying again in %.0fs", name, err,
                            APPROVAL_RETRY_SECONDS)
                asyncio.get_running_loop().call_later(
                    APPROVAL_RETRY_SECONDS, self._on_event, MODIFIED, dict(obj))
                return
            log.info("approved CSR %s: serving certificate of node %s", name, self.policy.node_name)
            self.approved.append(name)
            self._notify()
            return

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


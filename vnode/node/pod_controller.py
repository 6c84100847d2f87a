"""The pod controller: every pod bound to this node goes create → status → delete on the plugin.

Pods are keyed by uid in a keyed work queue (one worker per pod at a time, `PodWorkers` pods in
parallel). The worker is level-triggered: it looks at the pod's *latest* state and the agent's record
of it and does the next step, so bursts of watch events collapse and the controller's own writes
(status, the JobID annotation) cost a cheap no-op sync.

Lifecycle of one pod (see README/CONFIG.md for the user-facing story):

1. **Adopt** if the pod carries interLink's `JobID` annotation (submitted before a restart).
2. **In doubt**: the ledger says a create may have been sent but there is no JobID (a crash
   between the plugin's answer and the annotation write, or an answer lost to a timeout / malformed
   body). Ask the plugin's status for this uid first; if it knows the pod, adopt its job id.
3. **Resolve**: fetch referenced ConfigMaps/Secrets and service-account tokens; when one is
   missing the pod waits (ContainerCreating + Warning event) and is retried.
4. **Submit**: ledger entry (durable) → POST /create → "Submitted" event (a background write).
   Transient failures retry with capped exponential backoff; a permanent failure (the plugin said
   no) fails the pod with reason ProviderFailed and the plugin's message.
5. **Status**: the status poller asks the plugin about *all* submitted, non-terminal pods in one
   call per cycle (`StatusPeriodSeconds`), and about freshly submitted pods in a fast lane: first
   ~0.1 s after the create, then at growing intervals until the plugin reports them past
   waiting. A changed answer re-queues the pod in the work queue's urgent lane, whose worker
   patches pods/status if needed. The first such patch also carries the JobID annotation
   (pods/status accepts metadata changes), so a pod whose job starts at once costs exactly one
   pod write: straight to Running, with its job id.
6. **Delete**: deletionTimestamp (or the object vanishing) → POST /delete, retried until the
   plugin confirms or says it does not know the pod → ledger entry dropped → the API object is
   removed with grace 0 and a uid precondition. A pod deleted while its create is in flight is
   deleted remotely right after the create returns (the same worker handles both, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from plugin_client.errors import (
    PermanentPluginError,
    PluginError,
    PodNotFound,
    TransientPluginError,
    WireFormatError,
)
from plugin_client.logformat import pod_fields
from plugin_client.models import PodStatus as RemotePodStatus
from vnode.kube.errors import Conflict, KubeError, NotFound
from vnode.kube.events import NORMAL, WARNING, EventRecorder
from vnode.kube.informer import ADDED, DELETED, MODIFIED, rv_of, uid_of
from vnode.kube.resources import ObjectApi, PodApi
from vnode.kube.retry import Backoff
from vnode.kube.types import Pod, PodStatus
from vnode.node import podstatus, submission
from vnode.node.env import DownwardValues, InvalidPodSpec, MissingReference, References
from vnode.node.ledger import JobLedger, LedgerEntry
from vnode.node.podstatus import StatusContext, now_rfc3339
from vnode.node.volumes import VolumeOptions, unsupported_volumes
from vnode.node.workqueue import WorkQueue
from vnode.provider import Provider
from vnode.settings import Settings

log = logging.getLogger(__name__)

JOB_ID_ANNOTATION = "JobID"  # interLink's key (PR #239); tools and users read it
# A few seconds: long enough to serve a burst of pods from one GET, short enough that an edited
# ConfigMap reaches the next pod almost at once (the kubelet's own caches lag similarly).
OBJECT_CACHE_SECONDS = 3.0
# How often to ask the plugin again about a create that may still be in flight after a crash.
IN_FLIGHT_RECHECK_SECONDS = 2.0
# The fast status lane: a submitted pod is asked about after each of these delays (the first one
# gathers the creates of a burst into one call), until the plugin reports it past waiting; then
# only the full cycle asks. Sum ~7.6 s: a job that starts within seconds is seen within ~a second
# of it, and a job queued for hours costs 5 extra, batched, questions.
FAST_POLL_DELAYS = (0.1, 0.5, 1.0, 2.0, 4.0)
# Pods due within this much of the earliest one are asked about in the same call.
FAST_POLL_GATHER = 0.1


@dataclass(slots=True)
class PodRecord:
    """What the agent knows about one pod (by uid) beyond the apiserver object."""

    uid: str
    pod: Pod | None  # latest object from the informer; None once gone from the apiserver
    last_pod: Pod  # last object seen (for the remote delete after the API object is gone)
    job_id: str = ""
    submitted: bool = False
    in_doubt: bool = False  # a create may have reached the plugin; ask before resubmitting
    # Unix time of the create intent found in the ledger after a restart (0: not from a crash).
    doubt_since: float = 0.0
    failed: bool = False  # permanently failed by vnode; nothing more to do until deletion
    remote: RemotePodStatus | None = None
    attempts: int = 0  # consecutive failed create/delete attempts (for backoff)
    not_before: float = 0.0  # monotonic time before which a retry should not run
    missing_polls: int = 0
    status_quarantined: bool = False  # its status answer was malformed; polled on its own
    events_sent: set[str] | None = None  # keys of once-only events (None until the first)
    # The job id is known but not yet in the pod's JobID annotation: the next status write
    # carries it (or writes it alone).
    annotation_pending: bool = False
    # resourceVersion our last write produced: its watch echo needs no sync.
    echo_rv: str = ""
    # Fast status lane: index into FAST_POLL_DELAYS of the next delay (-1: not in the lane).
    fast_step: int = -1
    # The API object's removal was sent (grace 0): the events that follow it (the apiserver's own
    # update to grace 0, then DELETED) need nothing more.
    removed: bool = False

    @property
    def ref(self) -> str:
        meta = self.last_pod.get("metadata", {})
        job = f" job {self.job_id}" if self.job_id else ""
        return f"{meta.get('namespace')}/{meta.get('name')} ({self.uid}){job}"

    @property
    def log_fields(self) -> dict[str, str]:
        """`extra=` of a log line about this pod (namespace, name, uid, job id)."""
        meta = self.last_pod.get("metadata", {})
        return pod_fields(meta.get("namespace", ""), meta.get("name", ""), self.uid, self.job_id)

    @property
    def span_attributes(self) -> dict[str, str]:
        meta = self.last_pod.get("metadata", {})
        attributes = {"k8s.pod.namespace": meta.get("namespace", ""), "k8s.pod.name": meta.get("name", ""),
                      "k8s.pod.uid": self.uid}
        if self.job_id:
            attributes["vnode.job.id"] = self.job_id
        return attributes


class Retry(Exception):
    """Raised inside a sync to re-run it after `delay` seconds (not an error)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:.1f}s")
        self.delay = delay


class PodController:
    def __init__(self, pods: PodApi, objects: ObjectApi, provider: Provider,
                 recorder: EventRecorder, ledger: JobLedger, settings: Settings, *,
                 node_allocatable: Callable[[], Mapping[str, str]] = dict,
                 clock: Callable[[], float] = time.monotonic,
                 tracer: trace.Tracer | None = None) -> None:
        """`tracer`: where the create/delete/status-cycle spans go (the global provider's, a
        no-op unless tracing was set up, when None)."""
        self.pods = pods
        self.objects = objects
        self.provider = provider
        self.recorder = recorder
        # Event log lines carry the job id as soon as this controller knows it (before the pod's
        # JobID annotation is written).
        recorder.job_id_of = self._job_id_of
        self.ledger = ledger
        self.settings = settings
        self.node_allocatable = node_allocatable
        self.clock = clock
        self.tracer = tracer or trace.get_tracer(__name__)
        self.records: dict[str, PodRecord] = {}
        self.queue: WorkQueue[str] = WorkQueue(self._sync_supervised, workers=settings.pods.workers,
                                               name="pods", log_fields=self._log_fields_of)
        ps = settings.pods
        self.create_backoff = Backoff(base=ps.create_backoff_base, factor=2.0,
                                      cap=ps.create_backoff_cap)
        self.delete_backoff = Backoff(base=1.0, factor=2.0, cap=ps.delete_backoff_cap)
        self.volume_options = VolumeOptions(disable_projected=ps.disable_projected_volumes,
                                            root_ca_override=settings.kube.api_ca_crt)
        self.extra_env = submission.kubernetes_service_env(settings.kube.api_addr,
                                                           settings.kube.api_port)
        self._poke = asyncio.Event()
        self._full_poll_now = False
        # uid -> monotonic time its next fast-lane status question is due.
        self._fast_due: dict[str, float] = {}
        self._next_wake = float("inf")  # when the poller wakes next (a sooner due pokes it)
        self.started = False
        self._token_notices: set[tuple[str, str]] = set()
        # While the plugin does not answer pings, the statuses we hold are stale: write none, and
        # re-sync every pod once it is back (this also undoes the KCM marking pods NotReady when
        # the Node went NotReady, virtual-kubelet #899).
        self.plugin_reachable = True
        # ConfigMaps/Secrets fetched in the last few seconds, by (kind, namespace, name): a burst
        # of pods referencing the same object (kube-root-ca.crt, a shared config) costs one GET,
        # also when they all ask at once (the first GET in flight is shared).
        self._object_cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._object_fetches: dict[tuple[str, str, str], asyncio.Future[Any]] = {}
        # Counters for logs/metrics and tests.
        self.creates = 0
        self.deletes = 0
        self.status_calls = 0
        self.status_patches = 0

    # -- informer events ---------------------------------------------------------------------

    def on_pod_event(self, etype: str, obj: dict[str, Any]) -> None:
        uid = uid_of(obj)
        if not uid:
            return
        pod: Pod = obj  # type: ignore[assignment]
        rec = self.records.get(uid)
        if etype == DELETED:
            if rec is not None:
                rec.pod = None
                rec.last_pod = pod
                self._enqueue(uid)
            return
        if etype not in (ADDED, MODIFIED):
            return
        if rec is None:
            rec = PodRecord(uid=uid, pod=pod, last_pod=pod)
            self.records[uid] = rec
        else:
            echo = etype == MODIFIED and rec.echo_rv and rv_of(obj) == rec.echo_rv
            rec.pod = pod
            rec.last_pod = pod
            if echo:
                return  # our own write coming back: nothing changed that the record lacks
        self._enqueue(uid)

    def _enqueue(self, uid: str) -> None:
        if self.started:
            self.queue.add(uid)

    # -- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Call after the informer's first list: reconcile with the ledger, then start workers.

        Recorded pods the apiserver no longer has were deleted while the agent was down: they get
        a record without a pod object, so their worker deletes them remotely.
        """
        entries = await self.ledger.load()
        for uid, entry in entries.items():
            rec = self.records.get(uid)
            if rec is None:
                log.info("pod %s/%s (%s) was deleted while vnode was down; deleting it remotely",
                         entry.namespace, entry.name, uid,
                         extra=pod_fields(entry.namespace, entry.name, uid, entry.job_id))
                stub: Pod = entry.stub_pod()  # type: ignore[assignment]
                self.records[uid] = PodRecord(uid=uid, pod=None, last_pod=stub, job_id=entry.job_id,
                                              submitted=bool(entry.job_id), in_doubt=not entry.job_id)
            elif not rec.submitted:
                rec.in_doubt = True
                rec.doubt_since = entry.created
                rec.job_id = rec.job_id or entry.job_id
        self.started = True
        self.queue.start()
        for uid in list(self.records):
            self.queue.add(uid)

    async def stop(self) -> None:
        await self.queue.stop()

    # -- the worker ----------------------------------------------------------------------------

    def _job_id_of(self, uid: str) -> str:
        rec = self.records.get(uid)
        return rec.job_id if rec is not None else ""

    def _log_fields_of(self, uid: str) -> dict[str, str]:
        rec = self.records.get(uid)
        return rec.log_fields if rec is not None else pod_fields("", "", uid)

    async def _sync_supervised(self, uid: str) -> None:
        rec = self.records.get(uid)
        if rec is None:
            return
        try:
            await self.sync(rec)
        except Retry as retry:
            rec.not_before = self.clock() + retry.delay
            self.queue.add_after(uid, retry.delay)
        except KubeError as err:
            delay = self.create_backoff.delay(rec.attempts)
            rec.attempts += 1
            log.warning("pod %s: apiserver error (%s); retrying in %.1fs", rec.ref, err, delay,
                        extra=rec.log_fields)
            rec.not_before = self.clock() + delay
            self.queue.add_after(uid, delay)

    async def sync(self, rec: PodRecord) -> None:
        pod = rec.pod
        if pod is None:
            await self._delete_remote(rec)
            self.records.pop(rec.uid, None)
            self.queue.forget(rec.uid)
            return
        if pod.get("metadata", {}).get("deletionTimestamp"):
            if rec.removed:
                return
            await self._delete_remote(rec)
            await self.pods.delete_now(_ns(pod), _name(pod), rec.uid)
            rec.removed = True
            return
        now = self.clock()
        if now < rec.not_before:
            # An event (often the echo of our own status write) arrived during a backoff. Queueing
            # the key replaced its retry timer, so set it again; the retry itself stays put.
            self.queue.add_after(rec.uid, rec.not_before - now)
            return
        if rec.failed:
            return
        if not rec.submitted:
            annotated = pod.get("metadata", {}).get("annotations", {}).get(JOB_ID_ANNOTATION)
            if annotated:
                await self._adopt(rec, annotated)
            elif podstatus.is_terminal(pod):
                return  # finished before; nothing remote to do until deletion
            else:
                await self._submit(rec, pod)
                return
        if podstatus.is_terminal(pod):
            if rec.annotation_pending:  # finished before its job id was written
                await self._write_status(rec, pod, None)
            return
        await self._write_remote_status(rec, pod)

    # -- submission ------------------------------------------------------------------------------

    async def _adopt(self, rec: PodRecord, job_id: str) -> None:
        rec.submitted, rec.in_doubt, rec.job_id = True, False, job_id
        if rec.uid not in self.ledger.entries or self.ledger.entries[rec.uid].job_id != job_id:
            self.ledger.record_later(self._entry(rec))
        log.info("pod %s: adopted remote job", rec.ref, extra=rec.log_fields)
        self._schedule_fast_poll(rec)  # after a restart, statuses are refreshed at once

    def _entry(self, rec: PodRecord, *, intent: bool = False) -> LedgerEntry:
        meta = rec.last_pod.get("metadata", {})
        known = self.ledger.entries.get(rec.uid)
        created = time.time() if intent else (known.created if known else 0.0)
        return LedgerEntry(rec.uid, meta.get("namespace", ""), meta.get("name", ""), rec.job_id,
                           created)

    def _ctx(self, pod: Pod) -> StatusContext:
        return StatusContext(now=now_rfc3339(), host_ip=self.settings.node.internal_ip,
                             pod_ip=submission.pod_ip(pod))

    async def _write_status(self, rec: PodRecord, pod: Pod, desired: PodStatus | None) -> None:
        """Patch pods/status to `desired` if it differs, with the JobID annotation if pending."""
        patch = podstatus.status_patch(pod, desired) if desired is not None else None
        patch = self._with_job_id(rec, pod, patch)
        if patch is None:
            return
        base = rec.pod
        try:
            updated = await self.pods.patch_status(_ns(pod), _name(pod), patch)
        except (NotFound, Conflict):
            return  # gone or replaced; the informer will tell
        self.status_patches += 1
        if "annotations" in patch["metadata"]:
            rec.annotation_pending = False
        if rec.pod is not None and uid_of(updated) == rec.uid:  # type: ignore[arg-type]
            rec.echo_rv = rv_of(updated)  # type: ignore[arg-type]
            # Keep what the watch delivered while the patch was in flight (our own echo, or a
            # newer change): it is at least as new as the answer, and it is the informer's copy.
            if rec.pod is base:
                rec.pod = updated
                rec.last_pod = updated

    def _with_job_id(self, rec: PodRecord, pod: Pod, patch: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
        """`patch` plus the JobID annotation when the pod does not carry it yet.

        interLink writes the annotation with a patch of its own; pods/status takes metadata
        changes too, so one write can carry both the first status and the job id."""
        if not rec.annotation_pending:
            return patch
        if pod.get("metadata", {}).get("annotations", {}).get(JOB_ID_ANNOTATION) == rec.job_id:
            rec.annotation_pending = False
            return patch
        patch = patch or {"metadata": {"uid": rec.uid}}
        patch["metadata"]["annotations"] = {JOB_ID_ANNOTATION: rec.job_id}
        return patch

    def _event_once(self, rec: PodRecord, key: str, type_: str, reason: str, message: str) -> None:
        if rec.events_sent is None:
            rec.events_sent = set()
        if key in rec.events_sent:
            return
        rec.events_sent.add(key)
        self.recorder.emit(rec.last_pod, type_, reason, message)

    async def _ask_plugin(self, rec: PodRecord, pod: Pod) -> RemotePodStatus | None:
        """Does the plugin know this pod already? (in-doubt creates)"""
        statuses = await self.provider.status([pod])
        for st in statuses:
            # A plugin that echoes an empty placeholder for pods it does not know must not make
            # us adopt a job that does not exist: require a job id or container states.
            if st.uid == rec.uid and (st.jid or st.containers or st.init_containers):
                return st
        return None

    @contextlib.contextmanager
    def _span(self, name: str, rec: PodRecord) -> Iterator[Span]:
        """An INTERNAL span about one pod; the plugin client's CLIENT spans nest below it. A
        Retry is not an error of its own (the code that decided it sets the status)."""
        with self.tracer.start_as_current_span(name, attributes=rec.span_attributes,
                                               record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                yield span
            except Retry as retry:
                span.set_attribute("vnode.retry_in_seconds", retry.delay)
                raise
            except Exception as err:
                span.record_exception(err)
                span.set_status(Status(StatusCode.ERROR, str(err)))
                raise

    async def _submit(self, rec: PodRecord, pod: Pod) -> None:
        """Create the pod on the plugin, in one span from the reference fetch to the answer."""
        with self._span("create pod", rec):
            await self._submit_now(rec, pod)

    async def _submit_now(self, rec: PodRecord, pod: Pod) -> None:
        endpoint = self.settings.plugin.endpoint
        if rec.in_doubt:
            try:
                known = await self._ask_plugin(rec, pod)
            except PluginError as err:
                raise self._retry_create(rec, pod, f"could not ask plugin {endpoint} whether it "
                                                   f"already has the pod: {err}") from None
            if known is not None:
                rec.job_id = known.jid
                rec.remote = known
                await self._submitted(rec, pod, known.jid, adopted=True)
                return
            settle = rec.doubt_since + self.settings.plugin.timeout - time.time()
            if rec.doubt_since and settle > 0:
                # The crashed agent's create may still be running on the plugin (a slow sbatch):
                # resubmitting now could make a second job. Ask again until it cannot be in
                # flight any more (the plugin call timeout has passed since the intent).
                log.info("pod %s: plugin does not know it yet; a create from before the restart "
                         "may still be in flight, asking again (%.0fs left)", rec.ref, settle,
                         extra=rec.log_fields)
                raise Retry(min(IN_FLIGHT_RECHECK_SECONDS, settle))
            rec.in_doubt = False
            rec.doubt_since = 0.0

        unsupported = unsupported_volumes(pod)
        if unsupported:
            listed = ", ".join(f"{name} ({kind})" for name, kind in unsupported)
            await self._fail(rec, pod, f"volumes {listed} cannot be mounted on a virtual node: "
                                       "their data lives in the cluster, out of the backend's reach")
            return
        down = DownwardValues(host_ip=self.settings.node.internal_ip,
                              pod_ip=submission.pod_ip(pod),
                              node_allocatable=self.node_allocatable())
        # Durable intent before the create: a crash from there on leaves a trace to reconcile.
        # Written while the pod's references are fetched (both wait on the apiserver); if the
        # pod cannot be submitted after all, it is forgotten again.
        intent = asyncio.ensure_future(self.ledger.record(self._entry(rec, intent=True)))
        try:
            refs, tokens = await self._fetch(pod)
            built = submission.build(pod, refs, tokens, down, self.volume_options,
                                     extra_env=self.extra_env,
                                     skip_env_resolution=self.settings.pods.skip_downward_api_resolution)
        except MissingReference as missing:
            self.ledger.forget(rec.uid)
            await self._wait_for_reference(rec, pod, missing)
            return
        except InvalidPodSpec as bad:
            await self._fail(rec, pod, f"pod spec cannot run on a virtual node: {bad}")
            return
        for cname, keys in built.invalid_env_keys.items():
            self._event_once(rec, f"invalid-env-{cname}", WARNING, "InvalidEnvironmentVariableNames",
                             f"Keys [{', '.join(keys)}] from the EnvFrom of container {cname} were "
                             "skipped since they are invalid environment variable names.")
        await intent
        rec.in_doubt = True
        self.creates += 1
        try:
            result = await self.provider.create(built.data)
        except PodNotFound as err:  # a 404 on create: the plugin refuses this pod
            rec.in_doubt = False
            await self._fail(rec, pod, err.message)
            return
        except PermanentPluginError as err:
            rec.in_doubt = False
            await self._fail(rec, pod, err.message)
            return
        except WireFormatError as err:
            self.recorder.emit(pod, WARNING, "MalformedResponse",
                               f"plugin {endpoint} answered /create with a malformed body ({err}); "
                               "asking it about the pod before trying again")
            raise self._retry_create(rec, pod, f"malformed /create answer: {err}") from None
        except TransientPluginError as err:
            raise self._retry_create(rec, pod, str(err)) from None
        await self._submitted(rec, pod, result.pod_jid, adopted=False)

    async def _submitted(self, rec: PodRecord, pod: Pod, job_id: str, *, adopted: bool) -> None:
        """The plugin has the pod. Its job id is recorded lazily in the ledger (the intent is
        already durable) and goes into the JobID annotation with the first status write."""
        rec.submitted, rec.in_doubt, rec.attempts, rec.not_before = True, False, 0, 0.0
        rec.job_id = job_id
        self.ledger.record_later(self._entry(rec))
        rec.annotation_pending = bool(job_id)
        if job_id:
            trace.get_current_span().set_attribute("vnode.job.id", job_id)
        what = "adopted" if adopted else "submitted"
        log.info("pod %s: %s to plugin", rec.ref, what, extra=rec.log_fields)
        if not adopted:
            self.recorder.emit(pod, NORMAL, "Submitted",
                               f"Submitted to plugin {self.settings.plugin.endpoint} as job "
                               f"{job_id or '(no job id returned)'}")
        if rec.remote is not None and rec.pod is not None and not podstatus.is_terminal(rec.pod):
            await self._write_remote_status(rec, rec.pod)
        self._schedule_fast_poll(rec)  # the first real status comes from the plugin, within a second

    def _retry_create(self, rec: PodRecord, pod: Pod, message: str) -> Retry:
        delay = self.create_backoff.delay(rec.attempts)
        rec.attempts += 1
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message))
        log.warning("pod %s: submit failed (attempt %d): %s; retrying in %.1fs", rec.ref,
                    rec.attempts, message, delay, extra=rec.log_fields)
        self.recorder.emit(pod, WARNING, "SubmitFailed",
                           f"Submit to plugin {self.settings.plugin.endpoint} failed, will retry: "
                           f"{message}")
        return Retry(delay)

    async def _fail(self, rec: PodRecord, pod: Pod, message: str) -> None:
        rec.failed = True
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message))
        log.warning("pod %s: failed permanently: %s", rec.ref, message, extra=rec.log_fields)
        self.ledger.forget(rec.uid)
        self.recorder.emit(pod, WARNING, "SubmitFailed",
                           f"Submit to plugin {self.settings.plugin.endpoint} failed: {message}")
        desired = podstatus.failed_status(pod, self._ctx(pod), reason=podstatus.PROVIDER_FAILED,
                                          message=message)
        await self._write_status(rec, pod, desired)

    async def _wait_for_reference(self, rec: PodRecord, pod: Pod, missing: MissingReference) -> None:
        env = missing.context.startswith("container")  # env/envFrom, not a volume
        reason = "CreateContainerConfigError" if env else "ContainerCreating"
        event_reason = "Failed" if env else "FailedMount"
        self.recorder.emit(pod, WARNING, event_reason, f"waiting for {missing}")
        desired = podstatus.pending_status(pod, self._ctx(pod), reason=reason, message=str(missing))
        await self._write_status(rec, pod, desired)
        raise Retry(self.settings.pods.missing_ref_retry)

    async def _fetch(self, pod: Pod) -> tuple[References, dict[tuple[str, str], str]]:
        """Fetch every ConfigMap/Secret the pod references and its projected tokens, at once."""
        ns = _ns(pod)
        need = submission.needs(pod, self.volume_options)
        cm_names, sec_names = sorted(need.configmaps), sorted(need.secrets)
        results: list[Any] = await asyncio.gather(
            *(self._get_object("ConfigMap", ns, n) for n in cm_names),
            *(self._get_object("Secret", ns, n) for n in sec_names),
            *(self._token(pod, t.audience, t.expiration_seconds) for t in need.tokens),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        refs = References(
            configmaps=dict(zip(cm_names, results[:len(cm_names)], strict=True)),
            secrets=dict(zip(sec_names, results[len(cm_names):len(cm_names) + len(sec_names)],
                             strict=True)))
        token_values = results[len(cm_names) + len(sec_names):]
        tokens = {(t.volume, t.path): str(v) for t, v in zip(need.tokens, token_values, strict=True)}
        return refs, tokens

    async def _get_object(self, kind: str, namespace: str, name: str) -> Any:
        """A ConfigMap/Secret, reusing a copy fetched within OBJECT_CACHE_SECONDS. Absent objects
        are never cached, so a pod waiting for one sees it as soon as it is created."""
        key = (kind, namespace, name)
        now = self.clock()
        hit = self._object_cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        fetch = self._object_fetches.get(key)
        if fetch is None:
            fetch = asyncio.ensure_future(self._fetch_object(key))
            self._object_fetches[key] = fetch
            fetch.add_done_callback(lambda done: self._forget_fetch(key, done))
        # Shielded: one waiter being cancelled (its pod deleted) must not cancel the others'.
        return await asyncio.shield(fetch)

    def _forget_fetch(self, key: tuple[str, str, str], done: asyncio.Future[Any]) -> None:
        if self._object_fetches.get(key) is done:
            del self._object_fetches[key]

    async def _fetch_object(self, key: tuple[str, str, str]) -> Any:
        kind, namespace, name = key
        if kind == "ConfigMap":
            obj: Any = await self.objects.get_configmap(namespace, name)
        else:
            obj = await self.objects.get_secret(namespace, name)
        if obj is not None:
            now = self.clock()
            if len(self._object_cache) > 1000:
                self._object_cache = {k: v for k, v in self._object_cache.items() if v[0] > now}
            self._object_cache[key] = (now + OBJECT_CACHE_SECONDS, obj)
        return obj

    async def _token(self, pod: Pod, audience: str, expiration: int) -> str:
        meta = pod.get("metadata", {})
        sa = pod.get("spec", {}).get("serviceAccountName") or "default"
        try:
            result = await self.objects.request_token(
                _ns(pod), sa, pod_name=meta.get("name", ""), pod_uid=meta.get("uid", ""),
                expiration_seconds=expiration, audience=audience)
        except NotFound:
            raise MissingReference("ServiceAccount", sa) from None
        status = result.get("status") or {}
        expires = str(status.get("expirationTimestamp", ""))
        notice = (_ns(pod), sa)
        if expires and _seconds_until(expires) < 7 * 24 * 3600 and notice not in self._token_notices:
            # interLink's plugin API has no call to replace a file in a running job, so the
            # token cannot be refreshed remotely; say so where the user looks, once per service
            # account (an event per pod would cost an apiserver write per pod). Normal, not
            # Warning: most batch jobs never call the apiserver.
            self._token_notices.add(notice)
            self.recorder.emit(pod, NORMAL, "TokenNotRotated",
                               f"service-account token for {sa} expires at {expires}; remote jobs "
                               "cannot receive refreshed tokens (the plugin API has no update call)")
        return str(status.get("token", ""))

    # -- status ----------------------------------------------------------------------------------

    def on_plugin_health(self, reachable: bool) -> None:
        """Called by the node controller when the plugin's ping result flips."""
        was, self.plugin_reachable = self.plugin_reachable, reachable
        if reachable and not was and self.started:
            for uid in list(self.records):
                self.queue.add(uid)
            self._full_poll_now = True
            self._poke.set()

    async def _write_remote_status(self, rec: PodRecord, pod: Pod) -> None:
        """Write what the plugin last reported (and the JobID annotation if it is pending)."""
        desired: PodStatus | None = None
        if rec.remote is not None and self.plugin_reachable:
            try:
                desired = podstatus.remote_status(pod, rec.remote, self._ctx(pod))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                self._event_once(rec, f"malformed-status-{err}", WARNING, "MalformedStatus",
                                 f"plugin status for this pod could not be used: {err}")
        if desired is None and not rec.annotation_pending:
            return  # nothing known yet; the fast status lane asks right after a submit
        await self._write_status(rec, pod, desired)

    def poke_status(self) -> None:
        """Ask the status poller for a full cycle now."""
        self._full_poll_now = True
        self._poke.set()

    def _is_pollable(self, rec: PodRecord) -> bool:
        pod = rec.pod
        if pod is None or not rec.submitted or rec.failed:
            return False
        return not (pod.get("metadata", {}).get("deletionTimestamp") or podstatus.is_terminal(pod))

    def _pollable(self) -> list[PodRecord]:
        return [rec for rec in self.records.values() if self._is_pollable(rec)]

    # -- the fast lane ---------------------------------------------------------------------------

    def _schedule_fast_poll(self, rec: PodRecord) -> None:
        """Ask about `rec` soon, then at growing intervals while it waits to start."""
        rec.fast_step = 0
        due = self.clock() + FAST_POLL_DELAYS[0]
        self._fast_due[rec.uid] = due
        if due < self._next_wake:
            self._poke.set()

    def _advance_fast(self, rec: PodRecord, now: float) -> None:
        """After an answer: next fast question, or out of the lane once the plugin reports the
        pod past waiting (or its delays are used up; the full cycle goes on asking)."""
        rec.fast_step += 1
        period = self.settings.pods.status_period
        if (rec.fast_step >= len(FAST_POLL_DELAYS) or FAST_POLL_DELAYS[rec.fast_step] >= period
                or not _waiting(rec.remote)):
            rec.fast_step = -1
            self._fast_due.pop(rec.uid, None)
        else:
            self._fast_due[rec.uid] = now + FAST_POLL_DELAYS[rec.fast_step]

    def _fast_due_by(self, horizon: float) -> list[PodRecord]:
        due: list[PodRecord] = []
        for uid, when in list(self._fast_due.items()):
            if when > horizon:
                continue
            rec = self.records.get(uid)
            if rec is None or not self._is_pollable(rec):
                self._fast_due.pop(uid, None)
                if rec is not None:
                    rec.fast_step = -1
                continue
            due.append(rec)
        return due

    async def poll_fast_once(self) -> None:
        """One fast-lane call: the pods whose next question is due (or nearly)."""
        now = self.clock()
        recs = self._fast_due_by(now + FAST_POLL_GATHER)
        await self._poll(recs, full=False)
        now = self.clock()
        for rec in recs:
            if rec.fast_step >= 0:
                self._advance_fast(rec, now)

    # -- the full cycle --------------------------------------------------------------------------

    async def poll_status_once(self) -> None:
        """One status cycle: a batched /status call for all submitted, non-terminal pods."""
        await self._poll(self._pollable(), full=True)

    async def _poll(self, recs: list[PodRecord], *, full: bool) -> None:
        if not recs:
            return
        with self.tracer.start_as_current_span(
                "status cycle", attributes={"vnode.pods": len(recs),
                                            "vnode.status.lane": "full" if full else "fast"}):
            await self._poll_batches(recs, full=full)

    async def _poll_batches(self, recs: list[PodRecord], *, full: bool) -> None:
        batch_size = self.settings.pods.status_batch_size
        normal = sorted((r for r in recs if not r.status_quarantined), key=lambda r: r.uid)
        quarantined = [r for r in recs if r.status_quarantined]
        batches = [normal[i:i + batch_size] for i in range(0, len(normal), batch_size)]
        batches.extend([rec] for rec in quarantined)
        for batch in batches:
            got = await self._status_batch(batch)
            if got is None:
                # No answer: write the job ids we hold anyway (they do not depend on the plugin).
                for rec in batch:
                    if rec.annotation_pending:
                        self.queue.add(rec.uid, urgent=True)
                continue
            self._take_answers(batch, got, full=full)

    def _take_answers(self, asked: list[PodRecord], answers: dict[str, RemotePodStatus], *,
                      full: bool) -> None:
        for rec in asked:
            st = answers.get(rec.uid)
            if st is None:
                # Only full cycles count: a plugin may take a moment to report a new pod.
                if full:
                    rec.missing_polls += 1
                    if rec.missing_polls == 3:
                        self.recorder.emit(rec.last_pod, WARNING, "RemoteStatusMissing",
                                           f"plugin {self.settings.plugin.endpoint} does not "
                                           f"report this pod's job {rec.job_id or ''}".rstrip())
            else:
                rec.missing_polls = 0
                if rec.remote != st:
                    rec.remote = st
                    self.queue.add(rec.uid, urgent=True)
            if rec.annotation_pending:
                self.queue.add(rec.uid, urgent=True)

    async def _status_batch(self, batch: list[PodRecord]) -> dict[str, RemotePodStatus] | None:
        pods = [r.pod for r in batch if r.pod is not None]
        self.status_calls += 1
        try:
            statuses = await self.provider.status(pods)
        except WireFormatError as err:
            if len(batch) == 1:
                rec = batch[0]
                rec.status_quarantined = True
                self._event_once(rec, f"malformed-status-{err}", WARNING, "MalformedStatus",
                                 f"plugin {self.settings.plugin.endpoint} answered /status for "
                                 f"this pod with a malformed body: {err}")
                return None
            # Someone's status is malformed: find whose by asking for each pod on its own.
            log.warning("malformed /status answer for %d pods (%s); asking one by one",
                        len(batch), err)
            merged: dict[str, RemotePodStatus] = {}
            for rec in batch:
                got = await self._status_batch([rec])
                if got is not None:
                    merged.update(got)
            return merged
        except PluginError as err:
            log.warning("status call for %d pods failed: %s", len(batch), err)
            return None
        by_uid = {r.uid: r for r in batch}
        by_name = {(_ns(r.pod), _name(r.pod)): r for r in batch if r.pod is not None}
        out: dict[str, RemotePodStatus] = {}
        for st in statuses:
            match = by_uid.get(st.uid) or (by_name.get((st.namespace, st.name)) if not st.uid else None)
            if match is not None:
                out[match.uid] = st
        return out

    async def run_status(self) -> None:
        """The status poller: a full cycle every StatusPeriodSeconds, the fast lane in between."""
        period = self.settings.pods.status_period
        next_full = self.clock() + period
        while True:
            now = self.clock()
            if self._full_poll_now:
                self._full_poll_now = False
                next_full = now
            self._next_wake = min([next_full, *self._fast_due.values()])
            if self._next_wake > now:
                self._poke.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), self._next_wake - now)
                continue  # woken early: something became due sooner; look again
            try:
                if now >= next_full:
                    next_full = now + period
                    await self.poll_status_once()
                else:
                    await self.poll_fast_once()
            except Exception:  # never let one bad cycle stop status sync
                log.exception("status cycle failed")
            finally:
                self._next_wake = float("inf")

    # -- deletion --------------------------------------------------------------------------------

    def _may_exist_remotely(self, rec: PodRecord) -> bool:
        return rec.submitted or rec.in_doubt or rec.uid in self.ledger.entries

    async def _delete_remote(self, rec: PodRecord) -> None:
        """POST /delete until the plugin confirms or says it does not know the pod."""
        if not self._may_exist_remotely(rec):
            return
        with self._span("delete pod", rec) as span:
            await self._delete_remote_now(rec, span)

    async def _delete_remote_now(self, rec: PodRecord, span: Span) -> None:
        endpoint = self.settings.plugin.endpoint
        pod = rec.pod or rec.last_pod
        try:
            await self.provider.delete(pod)
        except PodNotFound:
            log.info("pod %s: plugin does not know it (already gone)", rec.ref, extra=rec.log_fields)
        except PluginError as err:
            delay = self.delete_backoff.delay(rec.attempts)
            rec.attempts += 1
            span.set_status(Status(StatusCode.ERROR, str(err)))
            log.warning("pod %s: remote delete failed (%s); retrying in %.1fs", rec.ref, err, delay,
                        extra=rec.log_fields)
            if rec.pod is not None:
                self.recorder.emit(pod, WARNING, "DeleteFailed",
                                   f"Deleting the job on plugin {endpoint} failed, will retry: {err}")
            raise Retry(delay) from None
        else:
            self.deletes += 1
            log.info("pod %s: deleted remotely", rec.ref, extra=rec.log_fields)
            if rec.pod is not None:
                self.recorder.emit(pod, NORMAL, "DeletedRemotely",
                                   f"Deleted job {rec.job_id or '(unknown id)'} on plugin {endpoint}")
        rec.submitted = rec.in_doubt = False
        rec.attempts = 0
        self.ledger.forget(rec.uid)

    # -- views for the kubelet endpoints ---------------------------------------------------------

    def find(self, namespace: str, name: str) -> Pod | None:
        for rec in self.records.values():
            pod = rec.pod
            if pod is not None and _ns(pod) == namespace and _name(pod) == name:
                return pod
        return None

    def list_pods(self) -> list[Pod]:
        return [r.pod for r in self.records.values() if r.pod is not None]

    def phase_counts(self) -> Counter[str]:
        """Pods held (still in the apiserver) by status.phase; no phase yet counts as Pending."""
        return Counter((r.pod.get("status") or {}).get("phase") or "Pending"
                       for r in self.records.values() if r.pod is not None)


def _waiting(remote: RemotePodStatus | None) -> bool:
    """Has the plugin not yet reported every app container started (running or terminated)?
    (While init containers run, the app containers wait.)"""
    if remote is None or not remote.containers:
        return True
    return any(c.state.running is None and c.state.terminated is None for c in remote.containers)


def _ns(pod: Pod) -> str:
    return pod.get("metadata", {}).get("namespace", "")


def _name(pod: Pod) -> str:
    return pod.get("metadata", {}).get("name", "")


def _seconds_until(rfc3339: str) -> float:
    try:
        moment = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (moment - datetime.now(UTC)).total_seconds()

"""The pure side of vnode.kube.csr: reading CSR states, and what the opt-in approver accepts."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from vnode.kube import csr
from vnode.kube.csr import ApprovalPolicy, CsrRequester, UserIdentity
from vnode.kubelet import certs

NODE = "hpc-node"
AGENT = UserIdentity("system:serviceaccount:vnode:agent", "9a1b2c3d-0000-1111-2222-333344445555",
                     ("system:serviceaccounts", "system:authenticated"))
POLICY = ApprovalPolicy(NODE, AGENT, ("10.4.0.7",), (NODE,))


def csr_object(
    *,
    node: str = NODE,
    ips: tuple[str, ...] = ("10.4.0.7",),
    dns: tuple[str, ...] = (),
    username: str = AGENT.username,
    uid: str = AGENT.uid,
    signer: str = certs.SIGNER,
    usages: tuple[str, ...] = certs.USAGES,
    name: str = "vnode-serving-hpc-node-abcde",
    conditions: list[dict[str, str]] | None = None,
    certificate: bytes = b"",
) -> dict[str, Any]:
    pem = certs.build_csr(certs.generate_key(), certs.ServingIdentity(node, ips, dns))
    obj = certs.csr_manifest(name, pem, signer=signer)
    obj["spec"].update(username=username, uid=uid, usages=list(usages))  # type: ignore[attr-defined]
    obj["metadata"] = {"name": name, "resourceVersion": "7"}
    status: dict[str, Any] = {}
    if conditions:
        status["conditions"] = conditions
    if certificate:
        status["certificate"] = base64.b64encode(certificate).decode()
    obj["status"] = status
    return obj


# ---- states ------------------------------------------------------------------------------------


def test_a_new_csr_is_pending() -> None:
    assert csr.csr_state(csr_object()).kind == "pending"


def test_approved_without_certificate_waits_for_the_signer() -> None:
    obj = csr_object(conditions=[{"type": "Approved", "status": "True", "reason": "R"}])
    assert csr.csr_state(obj).kind == "approved"


def test_issued_certificate_is_returned_as_pem() -> None:
    obj = csr_object(conditions=[{"type": "Approved", "status": "True"}], certificate=b"-----BEGIN CERT")
    assert csr.csr_state(obj) == csr.CsrState("issued", certificate=b"-----BEGIN CERT")


@pytest.mark.parametrize(("kind", "state"), [("Denied", "denied"), ("Failed", "failed")])
def test_denied_or_failed_wins_with_its_reason(kind: str, state: str) -> None:
    obj = csr_object(conditions=[{"type": kind, "status": "True", "reason": "Nope", "message": "no way"}])
    assert csr.csr_state(obj) == csr.CsrState(state, "Nope", "no way")  # type: ignore[arg-type]


def test_a_condition_with_status_false_does_not_count() -> None:
    obj = csr_object(conditions=[{"type": "Denied", "status": "False"}])
    assert csr.csr_state(obj).kind == "pending"


def test_garbage_certificate_field_is_a_failure_not_a_crash() -> None:
    obj = csr_object()
    obj["status"]["certificate"] = "%%% not base64"
    assert csr.csr_state(obj).kind == "failed"


# ---- the approver's decision ----------------------------------------------------------------------


def test_the_agents_own_well_formed_csr_is_approved() -> None:
    assert csr.approval_problems(csr_object(), POLICY) == []
    assert csr.approval_problems(csr_object(dns=(NODE,)), POLICY) == []
    assert csr.approval_problems(csr_object(usages=("digital signature", "server auth")), POLICY) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"node": "other-node"}, "system:node:other-node"),
        ({"ips": ("10.4.0.7", "10.0.0.1")}, "10.0.0.1"),
        ({"dns": ("kubernetes.default.svc",)}, "kubernetes.default.svc"),
        ({"username": "system:serviceaccount:other:agent"}, "not by this agent"),
        ({"username": "system:node:hpc-node"}, "not by this agent"),
        ({"uid": "another-uid"}, "uid"),
        ({"signer": "kubernetes.io/kube-apiserver-client"}, "signer"),
        ({"usages": ("digital signature", "server auth", "client auth")}, "usage"),
        ({"usages": ("digital signature", "key encipherment", "server auth", "cert sign")}, "usage"),
        ({"conditions": [{"type": "Denied", "status": "True"}]}, "already denied"),
    ],
)
def test_anything_else_is_left_alone(change: dict[str, Any], problem: str) -> None:
    problems = csr.approval_problems(csr_object(**change), POLICY)
    assert any(problem in p for p in problems), problems


def test_another_nodes_csr_is_recognised_as_none_of_our_business() -> None:
    # Only those are logged at DEBUG: every approver in a cluster sees every node's CSRs.
    assert csr.names_another_node(csr_object(node="other-node"), POLICY)
    assert not csr.names_another_node(csr_object(), POLICY)
    assert not csr.names_another_node(csr_object(uid="another-uid"), POLICY)  # ours, but wrong: worth INFO
    garbage = csr_object(node="other-node")
    garbage["spec"]["request"] = "***"
    assert not csr.names_another_node(garbage, POLICY)
    assert certs.csr_common_names(b"not a request") == []


def test_a_request_that_is_not_base64_is_refused() -> None:
    obj = csr_object()
    obj["spec"]["request"] = "***"
    assert "spec.request is not base64" in csr.approval_problems(obj, POLICY)


def test_approval_appends_a_vnode_condition_and_keeps_the_rest() -> None:
    obj = csr_object()
    now = dt.datetime(2026, 11, 25, 21, 0, 0, tzinfo=dt.UTC)
    body = csr.approved(obj, POLICY, now)
    assert body["spec"] == obj["spec"] and body["metadata"] == obj["metadata"]
    assert body["kind"] == "CertificateSigningRequest"
    assert body["status"]["conditions"] == [{
        "type": "Approved", "status": "True", "reason": "VnodeSelfApprove",
        "message": f"vnode agent {AGENT.username} approved the serving certificate of its own node {NODE}",
        "lastUpdateTime": "2026-11-25T21:00:00Z",
    }]
    assert "conditions" not in obj["status"]  # the input is not modified


# ---- which old CSRs the requester cleans up -------------------------------------------------------


def requester(identity: UserIdentity | None = AGENT) -> CsrRequester:
    return CsrRequester(api=None, node_name=NODE, requester=identity)  # type: ignore[arg-type]


def test_our_own_pending_csrs_for_this_node_are_stale() -> None:
    assert requester()._is_stale_own(csr_object())


@pytest.mark.parametrize(
    "change",
    [
        {"node": "other-node"},
        {"username": "system:admin"},
        {"conditions": [{"type": "Approved", "status": "True"}]},
        {"conditions": [{"type": "Denied", "status": "True"}]},
    ],
)
def test_other_peoples_or_decided_csrs_are_not_touched(change: dict[str, Any]) -> None:
    assert not requester()._is_stale_own(csr_object(**change))


def test_without_a_known_identity_only_our_generated_names_count() -> None:
    unknown = requester(None)
    assert unknown.name_prefix == "vnode-serving-hpc-node-"
    assert unknown._is_stale_own(csr_object(name="vnode-serving-hpc-node-x1y2z"))
    assert not unknown._is_stale_own(csr_object(name="csr-x1y2z"))


def test_generated_names_stay_within_the_name_limit() -> None:
    long_node = "n" * 253
    assert len(CsrRequester(api=None, node_name=long_node).name_prefix) + 5 <= 253  # type: ignore[arg-type]

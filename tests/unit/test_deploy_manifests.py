"""deploy/manifests/ is exactly what the chart renders: `kubectl apply` users get the same objects as
`helm install` users. Fix a failure with hack/helm/render-manifests."""

from __future__ import annotations

import sys

import yaml

from tests.conftest import REPO
from tests.deploy_support import helm_bin

sys.path.insert(0, str(REPO / "hack" / "helm"))
from manifests import MANIFESTS, SCENARIOS, render_all  # type: ignore[import-not-found]


def test_committed_manifests_match_the_chart() -> None:
    rendered = render_all(helm_bin())
    stale = [p.name for p, text in rendered.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"deploy/manifests out of date ({stale}); run hack/helm/render-manifests"


def test_no_manifest_without_a_scenario() -> None:
    assert sorted(p.name for p in MANIFESTS.glob("*.yaml")) == sorted(SCENARIOS)


def test_each_manifest_starts_with_its_namespace_and_holds_the_agent() -> None:
    for name in SCENARIOS:
        docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
        assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "interlink"}}
        kinds = {d["kind"] for d in docs}
        assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap",
                "Deployment"} <= kinds, name
        assert all(d["metadata"].get("namespace", "interlink") in ("interlink", "kube-node-lease") for d in docs)

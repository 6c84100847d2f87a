"""Per-container volume data and the /create payload, in interLink's wire shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from plugin_client.models import encode
from vnode.node.env import DownwardValues, InvalidPodSpec, MissingReference, References
from vnode.node.submission import build, kubernetes_service_env, needs, pod_ip
from vnode.node.volumes import (
    VolumeOptions,
    container_volumes,
    pod_for_plugin,
    token_sources,
    unsupported_volumes,
)

DOWN = DownwardValues(host_ip="10.0.0.5", pod_ip="127.0.0.1")
OPTS = VolumeOptions()


def cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": data}


def secret(name: str, **data: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ns"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def sa_volume(name: str = "kube-api-access") -> dict[str, Any]:
    return {"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}


def pod(containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
        init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "volumes": volumes}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"a": "b"}},
            "spec": spec}


def mount(name: str, path: str = "/m") -> dict[str, str]:
    return {"name": name, "mountPath": path}


def test_each_container_gets_only_the_volumes_it_mounts_init_containers_first() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("cfg"), mount("sec")]},
             {"name": "side", "volumeMounts": [mount("cfg")]}],
            [{"name": "cfg", "configMap": {"name": "app-config"}},
             {"name": "sec", "secret": {"secretName": "creds"}},
             {"name": "scratch", "emptyDir": {}}],
            init=[{"name": "init", "volumeMounts": [mount("scratch")]}])
    refs = References(configmaps={"app-config": cm("app-config", k="v")},
                      secrets={"creds": secret("creds", pw=b"x")})
    out = container_volumes(p, refs, {}, DOWN, OPTS)  # type: ignore[arg-type]
    assert [c.name for c in out] == ["init", "main", "side"]
    assert out[0].configmaps == [] and out[0].secrets == []  # emptyDir: the plugin's job
    assert [c["metadata"]["name"] for c in out[1].configmaps] == ["app-config"]
    assert [s["metadata"]["name"] for s in out[1].secrets] == ["creds"]
    assert [c["metadata"]["name"] for c in out[2].configmaps] == ["app-config"]
    assert out[2].secrets == []


def test_projected_service_account_volume_has_interlinks_configmap_shape() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("kube-api-access")]}], [sa_volume()])
    refs = References(configmaps={"kube-root-ca.crt": cm("kube-root-ca.crt", **{"ca.crt": "PEM"})})
    out = container_volumes(p, refs, {("kube-api-access", "token"): "TOKEN"}, DOWN, OPTS)  # type: ignore[arg-type]
    assert out[0].projected == [{"metadata": {"name": "kube-api-access"},
                                 "data": {"token": "TOKEN", "ca.crt": "PEM", "namespace": "ns"}}]


def test_root_ca_override_replaces_the_clusters_ca_and_is_not_fetched() -> None:
    options = VolumeOptions(root_ca_override="OVERRIDE")
    p = pod([{"name": "main", "volumeMounts": [mount("kube-api-access")]}], [sa_volume()])
    assert "kube-root-ca.crt" not in needs(p, options).configmaps  # type: ignore[arg-type]
    out = container_volumes(p, References(), {("kube-api-access", "token"): "T"}, DOWN, options)  # type: ignore[arg-type]
    assert out[0].projected[0]["data"]["ca.crt"] == "OVERRIDE"


def test_token_sources_honour_expiration_and_audience() -> None:
    vol = {"name": "v", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "vault", "expirationSeconds": 600, "path": "vault-token"}}]}}
    p = pod([{"name": "main", "volumeMounts": [mount("v")]}], [vol])
    (src,) = token_sources(p, OPTS)  # type: ignore[arg-type]
    assert (src.volume, src.path, src.audience, src.expiration_seconds) == ("v", "vault-token", "vault", 600)


def test_disable_projected_volumes_sends_none_and_requests_no_token() -> None:
    options = VolumeOptions(disable_projected=True)
    p = pod([{"name": "main", "volumeMounts": [mount("kube-api-access")]}], [sa_volume()])
    assert token_sources(p, options) == []  # type: ignore[arg-type]
    assert container_volumes(p, References(), {}, DOWN, options)[0].projected == []  # type: ignore[arg-type]


def test_projected_configmap_and_secret_items_map_keys_to_paths() -> None:
    vol = {"name": "v", "projected": {"sources": [
        {"configMap": {"name": "c", "items": [{"key": "a", "path": "dir/a.txt"}]}},
        {"secret": {"name": "s"}}]}}
    p = pod([{"name": "main", "volumeMounts": [mount("v")]}], [vol])
    refs = References(configmaps={"c": cm("c", a="A", b="B")},
                      secrets={"s": secret("s", key=b"text", blob=b"\xff\x00")})
    (entry,) = container_volumes(p, refs, {}, DOWN, OPTS)  # type: ignore[arg-type]
    projection = entry.projected[0]
    assert projection["data"] == {"dir/a.txt": "A", "key": "text"}
    # bytes that are not text keep their exact value, base64 in binaryData
    assert projection["binaryData"] == {"blob": base64.b64encode(b"\xff\x00").decode()}


def test_downward_api_volume_becomes_projected_with_kubelet_formats() -> None:
    vol = {"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu",
                                             "divisor": "1m"}}]}}
    p = pod([{"name": "main", "resources": {"limits": {"cpu": "1500m"}},
              "volumeMounts": [mount("info")]}], [vol])
    (entry,) = container_volumes(p, References(), {}, DOWN, OPTS)  # type: ignore[arg-type]
    assert entry.projected[0]["data"] == {"labels": 'a="b"', "cpu": "1500"}
    converted = pod_for_plugin(p)  # type: ignore[arg-type]
    assert converted["spec"]["volumes"][0] == {"name": "info", "projected": {
        "sources": [{"downwardAPI": {"items": vol["downwardAPI"]["items"]}}]}}
    assert "downwardAPI" in p["spec"]["volumes"][0]  # the input pod is not modified


def test_missing_configmap_volume_waits_unless_optional() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("cfg")]}],
            [{"name": "cfg", "configMap": {"name": "later"}}])
    with pytest.raises(MissingReference) as caught:
        container_volumes(p, References(configmaps={"later": None}), {}, DOWN, OPTS)  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.name) == ("ConfigMap", "later")
    p["spec"]["volumes"][0]["configMap"]["optional"] = True
    (entry,) = container_volumes(p, References(configmaps={"later": None}), {}, DOWN, OPTS)  # type: ignore[arg-type]
    assert entry.configmaps == [{"kind": "ConfigMap", "apiVersion": "v1",
                                 "metadata": {"name": "later", "namespace": "ns"}, "data": {}}]


def test_volume_items_naming_a_missing_key_wait_for_the_key() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("cfg")]}],
            [{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "gone", "path": "x"}]}}])
    with pytest.raises(MissingReference) as caught:
        container_volumes(p, References(configmaps={"c": cm("c", other="1")}), {}, DOWN, OPTS)  # type: ignore[arg-type]
    assert caught.value.key == "gone"


def test_downward_resource_ref_without_container_name_is_invalid() -> None:
    vol = {"name": "info", "downwardAPI": {"items": [
        {"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}}
    p = pod([{"name": "main", "volumeMounts": [mount("info")]}], [vol])
    with pytest.raises(InvalidPodSpec):
        container_volumes(p, References(), {}, DOWN, OPTS)  # type: ignore[arg-type]


def test_cluster_backed_volumes_are_unsupported_and_host_paths_go_to_the_plugin() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("data"), mount("cfg"), mount("scratch"),
                                               mount("csi")]}],
            [{"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
             {"name": "cfg", "configMap": {"name": "c"}},
             {"name": "scratch", "hostPath": {"path": "/scratch", "type": "DirectoryOrCreate"}},
             {"name": "csi", "csi": {"driver": "x"}},
             {"name": "unmounted", "nfs": {"server": "s", "path": "/"}}])
    assert unsupported_volumes(p) == [("csi", "csi"), ("data", "persistentVolumeClaim")]  # type: ignore[arg-type]


def test_needs_collects_env_and_volume_references() -> None:
    p = pod([{"name": "main", "volumeMounts": [mount("cfg"), mount("kube-api-access")],
              "envFrom": [{"secretRef": {"name": "env-secret"}}],
              "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]}],
            [{"name": "cfg", "configMap": {"name": "vol-cm"}}, sa_volume()])
    n = needs(p, OPTS)  # type: ignore[arg-type]
    assert n.configmaps == {"vol-cm", "env-cm", "kube-root-ca.crt"}
    assert n.secrets == {"env-secret"}
    assert [(t.volume, t.path) for t in n.tokens] == [("kube-api-access", "token")]


def test_create_payload_carries_resolved_env_and_is_otherwise_the_apiserver_pod() -> None:
    p = pod([{"name": "main", "image": "busybox", "command": ["echo", "$(MSG)"],
              "env": [{"name": "MSG", "value": "hi"}, {"name": "N", "valueFrom": {
                  "fieldRef": {"fieldPath": "metadata.name"}}}],
              "envFrom": [{"configMapRef": {"name": "c"}}],
              "volumeMounts": [mount("cfg")]}],
            [{"name": "cfg", "configMap": {"name": "c"}}])
    p["spec"]["someFutureField"] = {"kept": True}
    refs = References(configmaps={"c": cm("c", FROM_CM="1")})
    sub = build(p, refs, {}, DOWN, OPTS, extra_env=kubernetes_service_env("10.0.0.1", "6443"))  # type: ignore[arg-type]
    wire = json.loads(encode(sub.data))
    main = wire["pod"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["MSG"] == "hi" and env["N"] == "p" and env["FROM_CM"] == "1"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert all(set(e) == {"name", "value"} for e in main["env"])
    assert "envFrom" not in main
    assert main["command"] == ["echo", "hi"]
    assert wire["pod"]["spec"]["someFutureField"] == {"kept": True}
    assert wire["container"] == [{"name": "main", "configMaps": [refs.configmaps["c"]],
                                  "projectedvolumemaps": None, "secrets": None, "emptyDirs": None,
                                  "persistentVolumeClaims": None}]
    # the input pod keeps its valueFrom
    assert "valueFrom" in p["spec"]["containers"][0]["env"][1]


def test_skip_downward_api_resolution_sends_env_untouched() -> None:
    p = pod([{"name": "main", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}], [])
    sub = build(p, References(), {}, DOWN, OPTS, skip_env_resolution=True)  # type: ignore[arg-type]
    assert sub.data.pod["spec"]["containers"][0]["env"] == p["spec"]["containers"][0]["env"]


def test_pod_ip_comes_from_interlinks_annotation_or_loopback() -> None:
    assert pod_ip({"metadata": {}}) == "127.0.0.1"
    assert pod_ip({"metadata": {"annotations": {"interlink.eu/pod-ip": "10.9.0.7"}}}) == "10.9.0.7"


def test_kubernetes_service_env_needs_both_address_and_port() -> None:
    assert kubernetes_service_env("10.0.0.1", "") == {}
    env = kubernetes_service_env("10.0.0.1", "6443")
    assert env["KUBERNETES_PORT"] == "tcp://10.0.0.1:6443"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"

"""Volume plans: files, modes, binds, subPath, items, hostPath checks, unsupported kinds."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from vnode.plugins.slurm.podspec import PodSpecError, parse_pod
from vnode.plugins.slurm.volumes import (
    Bind,
    HostPathCheck,
    VolumeData,
    collect_volume_data,
    plan_volumes,
)


def pod_with(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], init_mounts: list[dict[str, Any]] | None = None) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox", "volumeMounts": mounts}], "volumes": volumes}
    if init_mounts is not None:
        spec["initContainers"] = [{"name": "init", "image": "busybox", "volumeMounts": init_mounts}]
    return parse_pod({"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": spec})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CM = {"metadata": {"name": "cfg"}, "data": {"app.conf": "x=1\n", "other": "y"}, "binaryData": {"bin": b64(b"\x00\xff")}}
SECRET = {"metadata": {"name": "sec"}, "data": {"password": b64(b"hunter2\n"), "key.pem": b64(b"-----BEGIN-----\nAAA\n-----END-----\n")}}


def files_of(plan: Any) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.content, f.mode) for f in plan.files}


def test_configmap_keys_become_files_and_the_directory_is_bound_read_only() -> None:
    pod = pod_with([{"name": "c", "configMap": {"name": "cfg"}}], [{"name": "c", "mountPath": "/etc/app"}])
    plan = plan_volumes(pod, VolumeData(configmaps={"cfg": CM}))
    assert files_of(plan) == {"configMaps/c/app.conf": (b"x=1\n", 0o644), "configMaps/c/other": (b"y", 0o644),
                              "configMaps/c/bin": (b"\x00\xff", 0o644)}
    assert plan.binds["main"] == [Bind("configMaps/c", "/etc/app", True)]


def test_secret_files_are_0600_and_byte_exact() -> None:
    pod = pod_with([{"name": "s", "secret": {"secretName": "sec"}}], [{"name": "s", "mountPath": "/run/s"}])
    plan = plan_volumes(pod, VolumeData(secrets={"sec": SECRET}))
    assert files_of(plan)["secrets/s/password"] == (b"hunter2\n", 0o600)
    assert files_of(plan)["secrets/s/key.pem"][0] == b"-----BEGIN-----\nAAA\n-----END-----\n"


def test_default_mode_and_item_mode_are_honoured() -> None:
    pod = pod_with([{"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o755,
                                                 "items": [{"key": "app.conf", "path": "sub/run.sh"},
                                                           {"key": "other", "path": "o", "mode": 0o400}]}}],
                   [{"name": "c", "mountPath": "/etc/app"}])
    plan = plan_volumes(pod, VolumeData(configmaps={"cfg": CM}))
    assert files_of(plan) == {"configMaps/c/sub/run.sh": (b"x=1\n", 0o755), "configMaps/c/o": (b"y", 0o400)}
    assert "configMaps/c/sub" in plan.dirs


def test_missing_item_key_fails_unless_optional() -> None:
    vol = {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "n"}]}}
    with pytest.raises(PodSpecError, match="'nope'"):
        plan_volumes(pod_with([vol], [{"name": "c", "mountPath": "/x"}]), VolumeData(configmaps={"cfg": CM}))
    vol["configMap"]["optional"] = True  # type: ignore[index]
    assert plan_volumes(pod_with([vol], [{"name": "c", "mountPath": "/x"}]), VolumeData(configmaps={"cfg": CM})).files == []


def test_missing_configmap_fails_naming_it_unless_optional() -> None:
    pod = pod_with([{"name": "c", "configMap": {"name": "absent"}}], [{"name": "c", "mountPath": "/x"}])
    with pytest.raises(PodSpecError, match="ConfigMap 'absent'"):
        plan_volumes(pod, VolumeData())
    pod = pod_with([{"name": "c", "configMap": {"name": "absent", "optional": True}}], [{"name": "c", "mountPath": "/x"}])
    plan = plan_volumes(pod, VolumeData())
    assert plan.binds["main"] == [Bind("configMaps/c", "/x", True)] and "configMaps/c" in plan.dirs


def test_sub_path_binds_one_entry() -> None:
    pod = pod_with([{"name": "c", "configMap": {"name": "cfg"}}], [{"name": "c", "mountPath": "/etc/app.conf", "subPath": "app.conf"}])
    plan = plan_volumes(pod, VolumeData(configmaps={"cfg": CM}))
    assert plan.binds["main"] == [Bind("configMaps/c/app.conf", "/etc/app.conf", True, sub_path=True)]


def test_projected_volume_uses_the_agents_projection_with_per_source_modes() -> None:
    volume = {"name": "kube-api-access-x", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt", "mode": 0o444}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
    projection = {"metadata": {"name": "kube-api-access-x"}, "data": {"token": "eyJ...", "ca.crt": "PEM", "namespace": "ns"}}
    pod = pod_with([volume], [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    plan = plan_volumes(pod, collect_volume_data([{"name": "main", "projectedvolumemaps": [projection]}]))
    assert files_of(plan) == {"projectedVolumeMaps/kube-api-access-x/token": (b"eyJ...", 0o600),
                              "projectedVolumeMaps/kube-api-access-x/ca.crt": (b"PEM", 0o444),
                              "projectedVolumeMaps/kube-api-access-x/namespace": (b"ns", 0o600)}


def test_missing_service_account_projection_is_skipped_with_a_warning() -> None:
    pod = pod_with([{"name": "kube-api-access-x", "projected": {"sources": []}}], [{"name": "kube-api-access-x", "mountPath": "/sa"}])
    plan = plan_volumes(pod, VolumeData())
    assert plan.binds["main"] == [] and "not mounted" in plan.warnings[0]


def test_missing_projection_of_a_user_volume_is_an_error() -> None:
    pod = pod_with([{"name": "data", "projected": {"sources": []}}], [{"name": "data", "mountPath": "/d"}])
    with pytest.raises(PodSpecError, match="'data' were not sent"):
        plan_volumes(pod, VolumeData())


def test_empty_dir_is_shared_by_containers_and_writable() -> None:
    pod = pod_with([{"name": "scratch", "emptyDir": {}}], [{"name": "scratch", "mountPath": "/data"}],
                   init_mounts=[{"name": "scratch", "mountPath": "/out"}])
    plan = plan_volumes(pod, VolumeData())
    assert plan.empty_dirs == ["emptyDirs/scratch"]
    assert plan.binds["init"] == [Bind("emptyDirs/scratch", "/out", False)]
    assert plan.binds["main"] == [Bind("emptyDirs/scratch", "/data", False)]


@pytest.mark.parametrize("htype", ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"])
def test_host_path_of_every_type_is_checked_on_the_node(htype: str) -> None:
    source: dict[str, Any] = {"path": "/scratch/data"}
    if htype:
        source["type"] = htype
    pod = pod_with([{"name": "h", "hostPath": source}], [{"name": "h", "mountPath": "/data", "readOnly": True}])
    plan = plan_volumes(pod, VolumeData())
    assert plan.host_checks == [HostPathCheck("/scratch/data", htype, "h")]
    assert plan.binds["main"] == [Bind("/scratch/data", "/data", True, in_pod_dir=False)]


def test_bad_host_path_type_is_rejected() -> None:
    pod = pod_with([{"name": "h", "hostPath": {"path": "/x", "type": "Folder"}}], [{"name": "h", "mountPath": "/d"}])
    with pytest.raises(PodSpecError, match="'Folder' is not one of"):
        plan_volumes(pod, VolumeData())


@pytest.mark.parametrize("kind", ["persistentVolumeClaim", "nfs", "csi", "ephemeral"])
def test_unsupported_volume_types_fail_naming_the_volume(kind: str) -> None:
    pod = pod_with([{"name": "data", kind: {"claimName": "x"}}], [{"name": "data", "mountPath": "/d"}])
    with pytest.raises(PodSpecError) as info:
        plan_volumes(pod, VolumeData())
    assert "'data'" in str(info.value) and kind in str(info.value)


def test_unmounted_unsupported_volume_is_fine() -> None:
    pod = pod_with([{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}], [])
    assert plan_volumes(pod, VolumeData()).binds == {"main": []}


@pytest.mark.parametrize(("mount", "needle"), [
    ({"name": "c", "mountPath": "relative"}, "absolute"),
    ({"name": "c", "mountPath": "/a:b"}, "':'"),
    ({"name": "c", "mountPath": "/a,b"}, "','"),
    ({"name": "c", "mountPath": "/x", "subPath": "../etc"}, "'..'"),
    ({"name": "c", "mountPath": "/x", "subPath": "/abs"}, "relative"),
    ({"name": "nope", "mountPath": "/x"}, "no volume named 'nope'"),
])
def test_bad_mounts_are_rejected_naming_the_field(mount: dict[str, Any], needle: str) -> None:
    with pytest.raises(PodSpecError) as info:
        pod_with([{"name": "c", "emptyDir": {}}], [mount])
    assert needle in str(info.value) and "spec.containers[0].volumeMounts[0]" in str(info.value)


def test_export_pod_data_false_skips_data_volumes_like_the_go_plugin() -> None:
    pod = pod_with([{"name": "c", "configMap": {"name": "cfg"}}], [{"name": "c", "mountPath": "/etc/app"}])
    plan = plan_volumes(pod, VolumeData(configmaps={"cfg": CM}), export_pod_data=False)
    assert plan.files == [] and plan.binds["main"] == [] and plan.warnings

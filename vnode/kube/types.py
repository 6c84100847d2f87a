"""TypedDicts for the Kubernetes fields vnode reads. Objects stay plain JSON dicts (what the
apiserver sent, passed on untouched to plugins); these types only tell mypy and readers which keys
the code relies on. `total=False` because the apiserver omits empty fields.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    labels: dict[str, str]
    annotations: dict[str, str]
    deletionTimestamp: str
    deletionGracePeriodSeconds: int
    creationTimestamp: str
    ownerReferences: list[dict[str, Any]]


class KeySelector(TypedDict, total=False):
    name: str
    key: str
    optional: bool


class ObjectFieldSelector(TypedDict, total=False):
    apiVersion: str
    fieldPath: str


class ResourceFieldSelector(TypedDict, total=False):
    containerName: str
    resource: str
    divisor: str


class EnvVarSource(TypedDict, total=False):
    fieldRef: ObjectFieldSelector
    resourceFieldRef: ResourceFieldSelector
    configMapKeyRef: KeySelector
    secretKeyRef: KeySelector


class EnvVar(TypedDict, total=False):
    name: str
    value: str
    valueFrom: EnvVarSource


class NameRef(TypedDict, total=False):
    name: str
    optional: bool


class EnvFromSource(TypedDict, total=False):
    prefix: str
    configMapRef: NameRef
    secretRef: NameRef


class ResourceRequirements(TypedDict, total=False):
    limits: dict[str, str]
    requests: dict[str, str]


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str
    subPath: str
    readOnly: bool


class Container(TypedDict, total=False):
    name: str
    image: str
    command: list[str]
    args: list[str]
    env: list[EnvVar]
    envFrom: list[EnvFromSource]
    resources: ResourceRequirements
    volumeMounts: list[VolumeMount]


class KeyToPath(TypedDict, total=False):
    key: str
    path: str
    mode: int


class DownwardAPIVolumeFile(TypedDict, total=False):
    path: str
    fieldRef: ObjectFieldSelector
    resourceFieldRef: ResourceFieldSelector
    mode: int


class Volume(TypedDict, total=False):
    name: str
    configMap: dict[str, Any]
    secret: dict[str, Any]
    projected: dict[str, Any]
    downwardAPI: dict[str, Any]
    emptyDir: dict[str, Any]


class PodSpec(TypedDict, total=False):
    nodeName: str
    serviceAccountName: str
    containers: list[Container]
    initContainers: list[Container]
    volumes: list[Volume]
    restartPolicy: str
    hostNetwork: bool


class ContainerStateDetail(TypedDict, total=False):
    reason: str
    message: str
    startedAt: str
    finishedAt: str
    exitCode: int
    signal: int
    containerID: str


class ContainerState(TypedDict, total=False):
    waiting: ContainerStateDetail
    running: ContainerStateDetail
    terminated: ContainerStateDetail


class ContainerStatus(TypedDict, total=False):
    name: str
    state: ContainerState
    lastState: ContainerState
    ready: bool
    started: bool
    restartCount: int
    image: str
    imageID: str
    containerID: str


class PodCondition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    lastProbeTime: str | None


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    conditions: list[PodCondition]
    containerStatuses: list[ContainerStatus]
    initContainerStatuses: list[ContainerStatus]
    startTime: str
    hostIP: str
    hostIPs: list[dict[str, str]]
    podIP: str
    podIPs: list[dict[str, str]]


class Pod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class ConfigMap(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    data: dict[str, str]
    binaryData: dict[str, str]


class Secret(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    data: dict[str, str]
    type: str

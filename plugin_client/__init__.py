"""interLink's plugin wire API: typed models, an async client, a plugin server helper and the exec
channel codec, shared by the agent and the plugins.

This package imports no Kubernetes client: the SLURM plugin uses it on a login node.

Modules: :mod:`.models` (wire types, Go-exact JSON), :mod:`.errors` (classified failures),
:mod:`.endpoint` (URLs, TLS), :mod:`.client` (the agent's side), :mod:`.server` (the plugin's side),
:mod:`.channel` (the Kubernetes channel protocol, sans I/O), :mod:`.gojson` (Go's JSON bytes).
"""

from .errors import (
    ExecNotSupported,
    PermanentPluginError,
    PluginError,
    PodNotFound,
    TransientPluginError,
    WireFormatError,
    is_transient,
)
from .models import (
    Accelerator,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateStruct,
    ExecRequest,
    LogOpts,
    LogStruct,
    PingResources,
    PingResponse,
    PodCreateRequests,
    PodRef,
    PodStatus,
    RetrievedContainer,
    RetrievedPodData,
    ScriptBuildConfig,
    Taint,
    decode,
    decode_list,
    encode,
    pod_ref,
)

__all__ = [
    "Accelerator",
    "ContainerState",
    "ContainerStateRunning",
    "ContainerStateTerminated",
    "ContainerStateWaiting",
    "ContainerStatus",
    "CreateStruct",
    "ExecNotSupported",
    "ExecRequest",
    "LogOpts",
    "LogStruct",
    "PermanentPluginError",
    "PingResources",
    "PingResponse",
    "PluginError",
    "PodCreateRequests",
    "PodNotFound",
    "PodRef",
    "PodStatus",
    "RetrievedContainer",
    "RetrievedPodData",
    "ScriptBuildConfig",
    "Taint",
    "TransientPluginError",
    "WireFormatError",
    "decode",
    "decode_list",
    "encode",
    "is_transient",
    "pod_ref",
]

"""SlurmConfig.yaml → SlurmConfig.

Every key of interlink-hq/interlink-slurm-plugin is accepted with its Go spelling and meaning, and
the same environment variables override it. Differences, on purpose:
* every path has a default (the Go plugin has none for sbatch & co, so a missing key broke at the
  first create); `SbatchPath` & co may be a command prefix such as `ssh login sbatch`, split once
  here with shell rules;
* YAML errors and wrong types are reported naming the key (the Go plugin ignores parse errors);
* `SingularityDefaultOptions: []` really means "no options" (Go silently restores the defaults);
* keys vnode adds (SacctPath, StatusCacheSeconds, ...) are documented in README.md.
Unknown keys are kept out of the typed config and returned as warnings, so a config written for a
newer Go plugin still loads.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .quantity import QuantityError, cpu_millis, memory_bytes, parse_slurm_memory

DEFAULT_CONFIG_PATH = "/etc/interlink/SlurmConfig.yaml"  # where the Go plugin looks last
DEFAULT_PORT = 4000  # the port the Go plugin's README and Helm charts use
DEFAULT_SINGULARITY_OPTIONS = ("--nv", "--no-eval", "--containall")  # the Go plugin's defaults
DEFAULT_ENROOT_OPTIONS = ("--rw",)  # what the Go struct tag intends and its sample configs set
RUNTIMES = ("singularity", "enroot")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class ConfigError(Exception):
    """A bad configuration value; `key` names it as written in the YAML file (or the env var)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Flavor:
    """A named resource profile (Go `FlavorConfig`)."""

    name: str
    description: str = ""
    cpu_default: int = 0  # CPUs; 0 = not set
    memory_default_bytes: int = 0  # 0 = not set
    uid: int | None = None
    slurm_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class SlurmConfig:
    # --- transport
    sidecar_port: int | None = DEFAULT_PORT
    socket_path: str | None = None  # from `Socket: unix:///path`; wins over the port
    # --- SLURM commands, each an argv prefix
    sbatch: tuple[str, ...] = ("sbatch",)
    scancel: tuple[str, ...] = ("scancel",)
    squeue: tuple[str, ...] = ("squeue",)
    sinfo: tuple[str, ...] = ("sinfo",)
    sacct: tuple[str, ...] = ("sacct",)
    sstat: tuple[str, ...] = ("sstat",)
    srun: tuple[str, ...] = ("srun",)
    # --- job script
    data_root: Path = field(default_factory=lambda: Path("~/.local/interlink/jobs").expanduser())  # the Go samples' folder
    bash_path: str = "/bin/bash"
    command_prefix: str = ""
    image_prefix: str = "docker://"  # a bare "busybox" means Docker Hub, as on a kubelet
    container_runtime: str = "singularity"
    singularity_path: str = "singularity"
    singularity_default_options: tuple[str, ...] = DEFAULT_SINGULARITY_OPTIONS
    enroot_path: str = "enroot"
    enroot_default_options: tuple[str, ...] = DEFAULT_ENROOT_OPTIONS
    mpiexec_path: str = "mpiexec"
    export_pod_data: bool = True
    shared_fs: bool = False
    tsocks: bool = False
    tsocks_path: str = ""
    tsocks_login_node: str = ""
    enable_probes: bool = False
    # --- resources
    default_cpu_millis: int = 1000  # one CPU: what a pod without requests gets from the kubelet's view
    default_memory_bytes: int | None = 2**30  # 1 GiB; None = leave it to SLURM's DefMemPer*
    flavors: Mapping[str, Flavor] = field(default_factory=dict)
    default_flavor: str = ""
    default_uid: int | None = None
    # --- node capacity (ping)
    taints: tuple[Taint, ...] | None = None
    resource_script_path: str = ""
    pods_capacity: int = 1000  # the queue, not the node, bounds pods; 1000 queued jobs is a common MaxSubmitJobs
    gpu_resource_name: str = "nvidia.com/gpu"
    # --- behaviour
    status_cache_seconds: float = 2.0  # the VK asks per pod every 5 s; 2 s keeps it to ~1 squeue per pass
    delete_retention_seconds: float = 300.0  # long enough to read a failed pod's files, short enough to not pile up
    log_poll_seconds: float = 0.5  # follow mode delivers new lines within 1 s
    command_timeout_seconds: float = 120.0  # a wedged slurmctld must not hang a request forever
    squeue_batch_size: int = 500  # job ids per squeue/sacct call; keeps argv far below ARG_MAX
    # --- observability
    usage_sample_seconds: float = 5.0  # job.sh samples its containers' /proc this often; 0 = no sampler
    usage_cache_seconds: float = 5.0  # one sstat per 5 s at most, whatever the scrapers ask (metrics-server: 15 s)
    metrics_address: str = ""  # host:port of the Prometheus /metrics listener; "" = off (no extra port)
    # --- logging
    verbose_logging: bool = False
    errors_only_logging: bool = False

    def pod_dir(self, namespace: str, uid: str) -> Path:
        """`DataRootFolder/<namespace>-<uid>`, the Go plugin's layout."""
        return self.data_root / f"{namespace}-{uid}"


# Keys the Go plugin reads but that have no effect there either; accepted silently.
_IGNORED_GO_KEYS = ("VKConfigPath", "SingularityPrefix", "EnrootPrefix", "Namespace")


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[SlurmConfig, list[str]]:
    """Read the file (path, else $SLURMCONFIGPATH, else /etc/interlink/SlurmConfig.yaml), apply the
    environment overrides and validate. Returns the config and warnings (unknown keys)."""
    chosen = str(path) if path else env.get("SLURMCONFIGPATH") or DEFAULT_CONFIG_PATH
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("SLURMCONFIGPATH" if not path else "--config",
                          f"cannot read {chosen}: {e.strerror or e}") from None
    return parse_config(text, env, origin=chosen)


def parse_config(text: str, env: Mapping[str, str], origin: str = "SlurmConfig.yaml") -> tuple[SlurmConfig, list[str]]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError("(file)", f"{origin} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(file)", f"{origin} must be a mapping of keys to values, not {type(raw).__name__}")
    return _build(raw, env)


class _Reader:
    """Typed access to the raw mapping; every error names the key."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def string(self, key: str, default: str = "") -> str:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(key, f"expected a string, got {_kind(v)}")
        return str(v)

    def boolean(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(key, f"expected true or false, got {v!r}")
        return v

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < minimum:
            raise ConfigError(key, f"expected a number >= {minimum:g}, got {v!r}")
        return float(v)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(key, f"expected an integer >= {minimum}, got {v!r}")
        return v

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ConfigError(key, f"expected a list of strings, got {_kind(v)}")
        for s in v:
            _no_control(key, s)
        return tuple(v)


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean"}.get(type(v), repr(v))


def _no_control(key: str, s: str) -> None:
    if any(ord(c) < 0x20 and c != "\t" for c in s) or "\x7f" in s:
        raise ConfigError(key, f"control characters are not allowed: {s!r}")


def _metrics_address(text: str) -> str:
    """`host:port`, `[v6]:port` or `:port` (all interfaces); "" = off."""
    text = text.strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("MetricsAddress", f"expected host:port (e.g. 127.0.0.1:9464), got {text!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ConfigError("MetricsAddress", f"unbalanced brackets in {text!r}")
    return text


def _command(key: str, value: str) -> tuple[str, ...]:
    """A command or command prefix (`ssh login sbatch`), split once with shell rules."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as e:
        raise ConfigError(key, f"cannot split {value!r} into words: {e}") from None
    if not argv:
        raise ConfigError(key, "must not be empty")
    return argv


def _env_bool(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise ConfigError(name, f"export {name} as true or false, not {value!r}")
    return value == "true"


def _build(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[SlurmConfig, list[str]]:
    r = _Reader(raw)
    d = SlurmConfig()
    kw: dict[str, Any] = {}

    # transport
    socket = r.string("Socket")
    port_text = env.get("SIDECARPORT") or r.string("SidecarPort")
    port_key = "SIDECARPORT" if env.get("SIDECARPORT") else "SidecarPort"
    if socket:
        if not socket.startswith("unix://") or len(socket) <= len("unix://"):
            raise ConfigError("Socket", f"expected unix:///path/to.sock, got {socket!r}")
        kw["socket_path"] = socket[len("unix://"):]
        kw["sidecar_port"] = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(port_key, f"expected a TCP port (1-65535), got {port_text!r}")
        if not socket:
            kw["sidecar_port"] = int(port_text)

    # SLURM commands: env > YAML > default
    for key, envname, attr in (("SbatchPath", "SBATCHPATH", "sbatch"), ("ScancelPath", "SCANCELPATH", "scancel"),
                               ("SqueuePath", "SQUEUEPATH", "squeue"), ("SinfoPath", "SINFOPATH", "sinfo"),
                               ("SacctPath", "SACCTPATH", "sacct"), ("SrunPath", "SRUNPATH", "srun"),
                               ("SstatPath", "SSTATPATH", "sstat")):
        if env.get(envname):
            kw[attr] = _command(envname, env[envname])
        elif r.has(key):
            kw[attr] = _command(key, r.string(key))
        else:
            r.get(key)

    data_root = r.string("DataRootFolder")
    if data_root:
        _no_control("DataRootFolder", data_root)
        kw["data_root"] = Path(os.path.abspath(os.path.expanduser(data_root)))
    bad = sorted({c for c in str(kw.get("data_root", d.data_root)) if c in "%:,"})
    if bad:
        # '%' is a pattern in sbatch --output; ':' and ',' split singularity --bind specs
        raise ConfigError("DataRootFolder", f"must not contain {''.join(bad)!r}")
    bash = r.string("BashPath", d.bash_path)
    if not bash.startswith("/"):
        raise ConfigError("BashPath", f"must be an absolute path (it is the job script's #! line), got {bash!r}")
    _no_control("BashPath", bash)
    kw["bash_path"] = bash
    kw["command_prefix"] = r.string("CommandPrefix")
    kw["image_prefix"] = r.string("ImagePrefix", d.image_prefix)
    _no_control("ImagePrefix", kw["image_prefix"])

    runtime = r.string("ContainerRuntime", "singularity") or "singularity"
    if runtime not in RUNTIMES:
        raise ConfigError("ContainerRuntime", f"{runtime!r} is not supported (use singularity or enroot)")
    kw["container_runtime"] = runtime
    kw["singularity_path"] = env.get("SINGULARITYPATH") or r.string("SingularityPath", d.singularity_path) or d.singularity_path
    kw["singularity_default_options"] = r.strings("SingularityDefaultOptions", DEFAULT_SINGULARITY_OPTIONS)
    kw["enroot_path"] = r.string("EnrootPath", d.enroot_path) or d.enroot_path
    kw["enroot_default_options"] = r.strings("EnrootDefaultOptions", DEFAULT_ENROOT_OPTIONS)
    kw["mpiexec_path"] = r.string("MpiexecPath", d.mpiexec_path) or d.mpiexec_path
    for key in ("SingularityPath", "EnrootPath", "MpiexecPath"):
        _no_control(key, r.string(key))
    kw["export_pod_data"] = r.boolean("ExportPodData", d.export_pod_data)
    kw["shared_fs"] = _env_bool("SHARED_FS", env["SHARED_FS"]) if env.get("SHARED_FS") else r.boolean("SharedFS", d.shared_fs)
    kw["tsocks"] = _env_bool("TSOCKS", env["TSOCKS"]) if env.get("TSOCKS") else r.boolean("Tsocks", d.tsocks)
    tsocks_path = env.get("TSOCKSPATH") or r.string("TsocksPath")
    if env.get("TSOCKSPATH") and not os.path.exists(tsocks_path):
        raise ConfigError("TSOCKSPATH", f"{tsocks_path} does not exist")
    kw["tsocks_path"] = tsocks_path
    kw["tsocks_login_node"] = r.string("TsocksLoginNode")
    if kw["tsocks"] and not (kw["tsocks_path"] and kw["tsocks_login_node"]):
        raise ConfigError("Tsocks", "needs TsocksPath and TsocksLoginNode")
    kw["enable_probes"] = r.boolean("EnableProbes", False)

    # resources
    if r.has("DefaultCPU"):
        try:
            kw["default_cpu_millis"] = cpu_millis(r.string("DefaultCPU"))
        except QuantityError as e:
            raise ConfigError("DefaultCPU", str(e)) from None
        if kw["default_cpu_millis"] <= 0:
            raise ConfigError("DefaultCPU", "must be positive")
    if "DefaultMemory" in raw:
        mem = r.get("DefaultMemory")
        if mem in (None, ""):
            kw["default_memory_bytes"] = None
        else:
            try:
                kw["default_memory_bytes"] = memory_bytes(r.string("DefaultMemory"))
            except QuantityError as e:
                raise ConfigError("DefaultMemory", str(e)) from None
            if kw["default_memory_bytes"] < 2**20:
                raise ConfigError("DefaultMemory", "must be at least 1Mi (SLURM counts memory in MiB)")
    kw["flavors"] = _flavors(r)
    kw["default_flavor"] = r.string("DefaultFlavor")
    if kw["default_flavor"] and kw["default_flavor"] not in kw["flavors"]:
        raise ConfigError("DefaultFlavor", f"{kw['default_flavor']!r} is not one of Flavors ({', '.join(kw['flavors']) or 'none defined'})")
    kw["default_uid"] = _uid(r, "DefaultUID")

    # capacity
    kw["taints"] = _taints(r)
    kw["resource_script_path"] = r.string("ResourceScriptPath")
    kw["pods_capacity"] = r.integer("PodsCapacity", d.pods_capacity, minimum=1)
    kw["gpu_resource_name"] = r.string("GpuResourceName", d.gpu_resource_name) or d.gpu_resource_name

    # behaviour
    kw["status_cache_seconds"] = r.number("StatusCacheSeconds", d.status_cache_seconds)
    kw["delete_retention_seconds"] = r.number("DeleteRetentionSeconds", d.delete_retention_seconds)
    kw["log_poll_seconds"] = r.number("LogPollSeconds", d.log_poll_seconds, minimum=0.05)
    if kw["log_poll_seconds"] > 1.0:
        raise ConfigError("LogPollSeconds", "must be at most 1 (follow mode promises new lines within 1 s)")
    kw["command_timeout_seconds"] = r.number("CommandTimeoutSeconds", d.command_timeout_seconds, minimum=1.0)
    kw["squeue_batch_size"] = r.integer("SqueueBatchSize", d.squeue_batch_size, minimum=1)
    kw["usage_sample_seconds"] = r.number("UsageSampleSeconds", d.usage_sample_seconds)
    if 0 < kw["usage_sample_seconds"] < 1:
        raise ConfigError("UsageSampleSeconds", "must be 0 (off) or at least 1 (each sample walks /proc)")
    kw["usage_cache_seconds"] = r.number("UsageCacheSeconds", d.usage_cache_seconds)
    kw["metrics_address"] = _metrics_address(env.get("VNODE_SLURM_METRICS_ADDRESS") or r.string("MetricsAddress"))
    kw["verbose_logging"] = r.boolean("VerboseLogging", False)
    kw["errors_only_logging"] = r.boolean("ErrorsOnlyLogging", False)

    for key in _IGNORED_GO_KEYS:
        r.get(key)
    warnings = [f"unknown key {k!r} ignored" for k in raw if k not in r.used]
    return SlurmConfig(**kw), warnings


def _uid(r: _Reader, key: str) -> int | None:
    v = r.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(key, f"expected a non-negative integer, got {v!r}")
    return v


def _flavors(r: _Reader) -> dict[str, Flavor]:
    raw = r.get("Flavors")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("Flavors", f"expected a mapping of flavor name to settings, got {_kind(raw)}")
    out: dict[str, Flavor] = {}
    for key, spec in raw.items():
        where = f"Flavors.{key}"
        if not isinstance(spec, dict):
            raise ConfigError(where, f"expected a mapping, got {_kind(spec)}")
        fr = _Reader(spec)
        name = fr.string("Name") or str(key)  # Go: an empty Name takes the map key
        cpu = spec.get("CPUDefault", 0) or 0
        fr.get("CPUDefault")
        if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
            raise ConfigError(f"{where}.CPUDefault", f"expected a non-negative integer, got {cpu!r}")
        mem_text = fr.string("MemoryDefault")
        mem = 0
        if mem_text:
            try:
                mem = parse_slurm_memory(mem_text)
            except QuantityError:
                raise ConfigError(f"{where}.MemoryDefault", f"{mem_text!r} is not a size like 16G, 32000M or 1024") from None
        try:
            flags = fr.strings("SlurmFlags", ())
            uid = _uid(fr, "UID")
        except ConfigError as e:
            raise ConfigError(f"{where}.{e.key}", e.message) from None
        for i, flag in enumerate(flags):
            if not flag.strip().startswith("-"):
                raise ConfigError(f"{where}.SlurmFlags[{i}]", f"{flag!r} should start with '-' or '--'")
        out[name] = Flavor(name=name, description=fr.string("Description"), cpu_default=cpu,
                           memory_default_bytes=mem, uid=uid, slurm_flags=flags)
        unknown = [k for k in spec if k not in fr.used]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown flavor key (expected Name, Description, CPUDefault, MemoryDefault, UID, SlurmFlags)")
    return out


def _taints(r: _Reader) -> tuple[Taint, ...] | None:
    raw = r.get("Taints")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError("Taints", f"expected a list of {{Key, Value, Effect}}, got {_kind(raw)}")
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or not t.get("Key"):
            raise ConfigError(f"Taints[{i}]", "expected a mapping with at least Key")
        effect = str(t.get("Effect") or "NoSchedule")
        if effect not in TAINT_EFFECTS:
            raise ConfigError(f"Taints[{i}].Effect", f"{effect!r} is not one of {', '.join(TAINT_EFFECTS)}")
        out.append(Taint(str(t["Key"]), str(t.get("Value") or ""), effect))
    return tuple(out)

"""Agent settings: interLink's VirtualKubeletConfig YAML, unchanged, plus vnode's own keys.

An interLink user keeps their file: every key interLink's virtual kubelet reads means the same here.
Keys interLink defines for features vnode does not implement (wstunnel networking, pprof, ...) and
keys nobody knows are accepted with a warning, so a file that worked with interLink never stops the
agent. Everything else is validated up front: a bad value raises ConfigError naming the key and the
problem, and `vnode run` turns that into one line on stderr and exit code 2.

Precedence: command-line flags > environment (NODENAME, POD_IP, KUBELET_PORT, KUBELET_URL,
KUBECONFIG, as interLink's VK reads them) > the YAML file > defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vnode.kube.quantity import QuantityError, is_non_negative_integer, parse_quantity

# interLink's default config path (cmd/virtual-kubelet/main.go), used when neither --config nor
# CONFIGPATH is given.
DEFAULT_CONFIG_PATH = "/etc/interlink/InterLinkConfig.yaml"

NO_SCHEDULE_TAINT_KEY = "virtual-node.interlink/no-schedule"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DIALECTS = ("plugin", "interlink")

# Accelerator resource types interLink sums into node capacity (virtualkubelet.go GetResources),
# and the node label each one's Model goes into.
ACCELERATOR_MODEL_LABELS = {
    "nvidia.com/gpu": "nvidia-gpu-type",
    "amd.com/gpu": "amd-gpu-type",
    "intel.com/gpu": "intel-gpu-type",
    "xilinx.com/fpga": "xilinx-fpga-type",
    "intel.com/fpga": "intel-fpga-type",
}

# interLink keys vnode reads but whose feature it does not implement: accepted, warned about.
INTERLINK_IGNORED_KEYS = {
    "Network": "wstunnel/WireGuard pod networking is not implemented by vnode",
    "Pprof": "Go pprof has no Python equivalent; use the metrics endpoint",
    "ServiceAccount": "unused by interLink too",
    "Namespace": "unused by interLink too",
    "VKConfigPath": "unused by interLink too",
    "ExportPodData": "a SLURM-plugin key, not a virtual-kubelet key",
}


class ConfigError(Exception):
    """A config value is unusable. `key` is the dotted path (e.g. `Resources.CPU`)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Accelerator:
    resource_type: str
    model: str
    available: str


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def to_k8s(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class PluginSettings:
    """How to reach the plugin (or interLink API server)."""

    # unix:///path, http://host:port or https://host:port (InterlinkURL + InterlinkPort).
    endpoint: str
    dialect: str = "plugin"
    token_file: str = ""
    insecure: bool = False
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    # 120 s like interLink's ResponseHeaderTimeout: a SLURM submit on a loaded login node can take
    # tens of seconds; longer means the plugin is stuck.
    timeout: float = 120.0
    jobscript_builder_url: str = ""


@dataclass(frozen=True)
class NodeSettings:
    name: str
    internal_ip: str = "127.0.0.1"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    # interLink's defaults (virtualkubelet.go SetDefaultResource).
    cpu: str = "100"
    memory: str = "3000G"
    pods: str = "10000"
    accelerators: tuple[Accelerator, ...] = ()
    pod_cidr: str = ""
    # 10 s: the kubelet's nodeStatusUpdateFrequency; Ready must follow the plugin within that.
    ping_period: float = 10.0
    # 10 s whatever the period: a plugin busy answering a burst (thousands of pods in one status
    # call) may take seconds to answer a ping, and a slow answer is not an outage.
    ping_timeout: float = 10.0
    # 3 failed pings in a row before NotReady (~2 periods after the first failure, 20-30 s by
    # default): one lost ping under load must not flap Ready, and 3 periods stays inside the
    # controller-manager's node-monitor grace period (40-50 s) that it allows a silent kubelet.
    ping_failure_threshold: int = 3
    # 60 s: status is re-posted at least this often even when unchanged (the bound; the
    # kubelet uses 5 min because its Lease carries liveness, as ours does).
    status_report_period: float = 60.0
    # 40 s lease renewed every 10 s: the kubelet's nodeLeaseDurationSeconds and its 1/4 renew.
    lease_duration: int = 40
    lease_renew_period: float = 10.0


@dataclass(frozen=True)
class KubeletSettings:
    """The HTTPS kubelet endpoint (served by vnode.kubelet)."""

    address: str = "0.0.0.0"
    # 10250: the port the apiserver assumes for kubelets and the one interLink's Helm chart sets.
    port: int = 10250
    cert_file: str = ""
    key_file: str = ""
    disable_csr: bool = False
    csr_signer: str = "kubernetes.io/kubelet-serving"
    insecure: bool = False
    # Where generated/issued certificates are kept ("" = /tmp/vnode-certs/<node>).
    cert_dir: str = ""
    # Approve our own serving CSR (needs `approve` on the signer; off: an admin approves).
    csr_auto_approve: bool = False
    # CA that signs the apiserver's kubelet-client certificate ("" = the CA of the apiserver
    # connection: the kubeconfig's, or the service account's ca.crt in-cluster).
    client_ca_file: str = ""
    # Serve the kubelet endpoint at all (off: no kubectl logs/exec, e.g. for a plugin without them).
    enabled: bool = True
    # Declare ExtendWebSocketsToKubelet on 1.36+ so kubectl exec's WebSocket reaches us untranslated:
    # on by default because only exec changes (attach and port-forward are not served either way).
    declare_websocket: bool = True


@dataclass(frozen=True)
class KubeSettings:
    """The apiserver client."""

    kubeconfig: str = ""
    # 200 qps / burst 400. The kubelet's 50/100 is sized for 110 pods; a virtual node holds
    # thousands (capacity 10000) and a burst costs ~2 requests per pod (token, status; events go
    # in a background lane), so 1000 new pods need ~10 s of this budget. The apiserver protects
    # itself anyway: --max-mutating-requests-inflight (200) and --max-requests-inflight (400) and
    # API Priority and Fairness queue or answer 429 (honoured via Retry-After), and the agent's
    # own concurrency is bounded by PodWorkers.
    qps: float = 200.0
    burst: int = 400
    # Values injected into pods as KUBERNETES_SERVICE_HOST/PORT and used instead of the cluster's
    # kube-root-ca.crt, for pods that call the apiserver from the remote side.
    api_addr: str = ""
    api_port: str = ""
    api_ca_crt: str = ""


@dataclass(frozen=True)
class PodSettings:
    # 50 workers: a create waits ~0.1-1 s on the apiserver (token, ledger) and the plugin (a SLURM
    # submit), so 50 in flight keep up with a burst of ~100 pods/s; it is also the most /create
    # calls the plugin sees at once (slurmctld serves RPCs in up to 256 threads by default).
    # Status writes skip the line (urgent lane), so they never wait behind creates.
    workers: int = 50
    # 5 s like interLink's status loop, but one batched call for all pods instead of one per pod.
    status_period: float = 5.0
    # At most this many pods per /status call; more pods are split into several calls per cycle.
    # 10000, the default node capacity: a full node is one call per cycle (one squeue for the
    # SLURM plugin), a body of ~2.5 KB per pod (~25 MB at capacity; plugin_client's server takes
    # 256 MiB, Go's net/http has no limit).
    status_batch_size: int = 10000
    # Create retries: 1 s doubling to 5 min, so a plugin outage of any length is ridden out
    # without hammering it.
    create_backoff_base: float = 1.0
    create_backoff_cap: float = 300.0
    # Missing ConfigMap/Secret: re-check every 5 s (interLink polls every 2 s; watch events for
    # the referenced object would be quicker but need cluster-wide list/watch on secrets).
    missing_ref_retry: float = 5.0
    # Remote deletes: retried until the plugin confirms, backing off to this cap.
    delete_backoff_cap: float = 60.0
    disable_projected_volumes: bool = False
    skip_downward_api_resolution: bool = False
    # Where the record of submitted jobs lives (ConfigMaps vnode-jobs-<node>-<n>): kube-node-lease
    # already holds the node's Lease, and must exist in every cluster.
    state_namespace: str = "kube-node-lease"


@dataclass(frozen=True)
class HealthSettings:
    """The plain-HTTP /healthz port for probes."""

    # 0 = off: outside Kubernetes nobody probes; the Helm chart sets 10248 (the kubelet's healthz).
    port: int = 0
    # Loopback unless told otherwise: a probe from the node needs 0.0.0.0 (the chart sets it).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class LogSettings:
    verbose: bool = False
    errors_only: bool = False


@dataclass(frozen=True)
class Settings:
    plugin: PluginSettings
    node: NodeSettings
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    pods: PodSettings = field(default_factory=PodSettings)
    logging: LogSettings = field(default_factory=LogSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    config_path: str = ""
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Loading


class _Reader:
    """Typed access to one mapping of the YAML document, recording which keys were used."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def string(self, key: str, default: str = "") -> str:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(self.path(key), f"expected a string, got {_kind(value)}")
        return str(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(self.path(key), f"expected true or false, got {value!r}")

    def number(self, key: str, default: float, *, minimum: float = 0.0,
               exclusive_min: bool = False) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(self.path(key), f"expected a number, got {_kind(value)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(self.path(key), f"expected a number, got {value!r}") from None
        if number < minimum or (exclusive_min and number == minimum):
            bound = "greater than" if exclusive_min else "at least"
            raise ConfigError(self.path(key), f"must be {bound} {minimum:g}, got {value!r}")
        return number

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise ConfigError(self.path(key), f"expected an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(self.path(key), f"expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(self.path(key), f"must be at least {minimum}{upper}, got {value!r}")
        return number

    def mapping(self, key: str) -> _Reader:
        value = self.raw(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(self.path(key), f"expected a mapping, got {_kind(value)}")
        return _Reader(value, prefix=f"{self.path(key)}.")

    def sequence(self, key: str) -> list[Any]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(self.path(key), f"expected a list, got {_kind(value)}")
        return value

    def unused(self) -> list[str]:
        return [k for k in self.data if k not in self.used]


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def check_qualified_name(name: str) -> str | None:
    """None if `name` is a valid label/taint key, else why not."""
    prefix, _, local = name.rpartition("/")
    if "/" in name and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a DNS subdomain"
    if not local or len(local) > 63 or not _LABEL_NAME.match(local):
        return (f"name {local!r} must be 1-63 characters of letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def check_label_value(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (f"value {value!r} must be at most 63 characters of letters, digits, '-', '_' or "
                "'.', starting and ending with a letter or digit")
    return None


def check_node_name(name: str) -> str | None:
    if not name:
        return "a node name is required (--nodename or NODENAME)"
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return f"{name!r} is not a valid node name (a lowercase DNS subdomain)"
    return None


def _plugin_endpoint(url: str, port: str) -> str:
    if not url:
        raise ConfigError("InterlinkURL", "is required (unix:///path/plugin.sock, http://host or "
                                          "https://host)")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = url[len("unix://"):]
        if not path.startswith("/"):
            raise ConfigError("InterlinkURL", f"{url!r}: a unix socket needs an absolute path "
                                              "(unix:///path/to/socket)")
        return url
    if parts.scheme not in ("http", "https"):
        raise ConfigError("InterlinkURL", f"{url!r} must start with unix://, http:// or https://")
    if not parts.hostname:
        raise ConfigError("InterlinkURL", f"{url!r} has no host")
    try:
        url_port = parts.port
    except ValueError:
        raise ConfigError("InterlinkURL", f"{url!r} has an invalid port") from None
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("InterlinkPort", f"{port!r} is not a TCP port number")
        if url_port is not None and url_port != int(port):
            raise ConfigError("InterlinkPort", f"{port} conflicts with the port in InterlinkURL {url!r}")
        if url_port is None:
            base = url.rstrip("/")
            return f"{base}:{port}"
    return url.rstrip("/")


def _labels(reader: _Reader) -> dict[str, str]:
    labels: dict[str, str] = {}
    for i, entry in enumerate(reader.sequence("NodeLabels")):
        key = f"NodeLabels[{i}]"
        if not isinstance(entry, str) or "=" not in entry:
            raise ConfigError(key, f"expected \"key=value\", got {entry!r}")
        name, _, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        problem = check_qualified_name(name) or check_label_value(value)
        if problem:
            raise ConfigError(key, problem)
        labels[name] = value
    return labels


def _taints(reader: _Reader) -> tuple[Taint, ...]:
    taints: list[Taint] = []
    for i, entry in enumerate(reader.sequence("NodeTaints")):
        key = f"NodeTaints[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(key, f"expected a mapping with Key, Value and Effect, got {_kind(entry)}")
        sub = _Reader(entry, prefix=f"{key}.")
        name = sub.string("Key")
        value = sub.string("Value")
        effect = sub.string("Effect") or "NoSchedule"
        problem = check_qualified_name(name) if name else "Key is required"
        if problem:
            raise ConfigError(f"{key}.Key", problem)
        if value and (problem := check_label_value(value)):
            raise ConfigError(f"{key}.Value", problem)
        if effect not in TAINT_EFFECTS:
            raise ConfigError(f"{key}.Effect", f"{effect!r} is not one of {', '.join(TAINT_EFFECTS)}")
        if name == NO_SCHEDULE_TAINT_KEY:
            continue  # always present; a duplicate key+effect would be rejected by the apiserver
        taints.append(Taint(name, value, effect))
    return tuple(taints)


def _quantity(reader: _Reader, key: str, default: str, *, integer: bool = False) -> str:
    value = reader.string(key, default) or default
    try:
        amount = parse_quantity(value)
    except QuantityError as err:
        raise ConfigError(reader.path(key), str(err)) from None
    if amount < 0:
        raise ConfigError(reader.path(key), f"{value!r} must not be negative")
    if integer and not is_non_negative_integer(value):
        raise ConfigError(reader.path(key), f"{value!r} must be a whole number")
    return value


def _accelerators(reader: _Reader) -> tuple[Accelerator, ...]:
    out: list[Accelerator] = []
    for i, entry in enumerate(reader.sequence("Accelerators")):
        key = f"{reader.path('Accelerators')}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(key, f"expected a mapping with ResourceType, Model and Available, "
                                   f"got {_kind(entry)}")
        sub = _Reader(entry, prefix=f"{key}.")
        rtype = sub.string("ResourceType")
        if not rtype or (problem := check_qualified_name(rtype)):
            raise ConfigError(f"{key}.ResourceType", "is required" if not rtype else str(problem))
        available = _quantity(sub, "Available", "0")
        out.append(Accelerator(rtype, sub.string("Model"), available))
    return tuple(out)


def _ip(value: str, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IP address") from None


def load_settings(config_path: str | None = None, *, nodename: str | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the config file and environment. Raises ConfigError."""
    env = os.environ if env is None else env
    path = config_path or env.get("CONFIGPATH") or DEFAULT_CONFIG_PATH
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("--config", f"cannot read {path}: {err.strerror or err}") from None
    return settings_from_yaml(text, nodename=nodename, env=env, config_path=path)


def settings_from_yaml(text: str, *, nodename: str | None = None,
                       env: Mapping[str, str] | None = None, config_path: str = "") -> Settings:
    env = {} if env is None else env
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError("(file)", f"not valid YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("(file)", f"the top level must be a mapping of keys, got {_kind(data)}")
    return settings_from_mapping(data, nodename=nodename, env=env, config_path=config_path)


def settings_from_mapping(data: Mapping[str, Any], *, nodename: str | None = None,
                          env: Mapping[str, str] | None = None, config_path: str = "") -> Settings:
    env = {} if env is None else env
    top = _Reader(data)
    warnings: list[str] = []

    # --- node
    name = nodename or env.get("NODENAME", "")
    if problem := check_node_name(name):
        raise ConfigError("NODENAME", problem)
    internal_ip = env.get("POD_IP") or top.string("PodIP") or "127.0.0.1"
    internal_ip = _ip(internal_ip, "POD_IP" if env.get("POD_IP") else "PodIP")
    resources = top.mapping("Resources")
    accelerators = _accelerators(resources)
    pod_cidr = top.mapping("PodCIDR")
    subnet = pod_cidr.string("Subnet")
    if subnet:
        try:
            subnet = str(ipaddress.ip_network(subnet, strict=False))
        except ValueError:
            raise ConfigError("PodCIDR.Subnet", f"{subnet!r} is not a CIDR") from None
    pod_cidr.integer("MaxIP", 0)
    pod_cidr.integer("MinIP", 0)
    lease_duration = top.integer("LeaseDurationSeconds", NodeSettings.lease_duration, minimum=4)
    node = NodeSettings(
        name=name,
        internal_ip=internal_ip,
        labels=_labels(top),
        taints=_taints(top),
        cpu=_quantity(resources, "CPU", NodeSettings.cpu),
        memory=_quantity(resources, "Memory", NodeSettings.memory),
        pods=_quantity(resources, "Pods", NodeSettings.pods, integer=True),
        accelerators=accelerators,
        pod_cidr=subnet,
        ping_period=top.number("PingPeriodSeconds", NodeSettings.ping_period, minimum=0.1),
        ping_timeout=top.number("PingTimeoutSeconds", NodeSettings.ping_timeout, minimum=0.1),
        ping_failure_threshold=top.integer("PingFailureThreshold", NodeSettings.ping_failure_threshold,
                                           minimum=1),
        status_report_period=top.number("NodeStatusReportSeconds",
                                        NodeSettings.status_report_period, minimum=1),
        lease_duration=lease_duration,
        # Renew at 1/4 of the duration, as the kubelet and virtual-kubelet do.
        lease_renew_period=lease_duration / 4,
    )
    if node.ping_period > 10:
        warnings.append("PingPeriodSeconds above 10 makes Ready follow the plugin slower than "
                        "a kubelet follows its runtime")

    # --- plugin
    http = top.mapping("HTTP")
    tls = top.mapping("TLS")
    dialect = top.string("Dialect", "plugin")
    if dialect not in DIALECTS:
        raise ConfigError("Dialect", f"{dialect!r} is not one of {', '.join(DIALECTS)}")
    endpoint = _plugin_endpoint(top.string("InterlinkURL"), top.string("InterlinkPort"))
    tls_enabled = tls.boolean("Enabled")
    client_cert = tls.string("CertFile")
    client_key = tls.string("KeyFile")
    if bool(client_cert) != bool(client_key):
        raise ConfigError("TLS.CertFile" if not client_cert else "TLS.KeyFile",
                          "TLS.CertFile and TLS.KeyFile must be given together")
    ca_cert = http.string("CaCert") or tls.string("CACertFile")
    for key, file in (("VKTokenFile", top.string("VKTokenFile")), ("HTTP.CaCert", http.string("CaCert")),
                      ("TLS.CACertFile", tls.string("CACertFile")), ("TLS.CertFile", client_cert),
                      ("TLS.KeyFile", client_key)):
        if file and not Path(file).exists():
            # Token files are often written by a sidecar after start; a warning, not an error.
            if key == "VKTokenFile":
                warnings.append(f"VKTokenFile {file} does not exist yet; it is read on every call")
            else:
                raise ConfigError(key, f"file {file} does not exist")
    if (client_cert or tls_enabled) and not endpoint.startswith("https://"):
        warnings.append("TLS settings have no effect unless InterlinkURL is https://")
    plugin = PluginSettings(
        endpoint=endpoint,
        dialect=dialect,
        token_file=top.string("VKTokenFile"),
        insecure=http.boolean("Insecure"),
        ca_cert=ca_cert,
        client_cert=client_cert if (tls_enabled or client_cert) else "",
        client_key=client_key if (tls_enabled or client_key) else "",
        timeout=top.number("PluginTimeoutSeconds", PluginSettings.timeout, minimum=0,
                           exclusive_min=True),
        jobscript_builder_url=top.string("JobScriptBuilderURL"),
    )

    # --- kubelet endpoint
    kubelet_http = top.mapping("KubeletHTTP")
    port_text = env.get("KUBELET_PORT") or top.string("KubeletPort")
    port = KubeletSettings.port
    if port_text:
        # 0 = any free port (tests); the Node then advertises the port actually bound.
        if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            raise ConfigError("KUBELET_PORT" if env.get("KUBELET_PORT") else "KubeletPort",
                              f"{port_text!r} is not a TCP port number")
        port = int(port_text)
    address = env.get("KUBELET_URL") or top.string("KubeletAddress") or KubeletSettings.address
    cert_file, key_file = top.string("KubeletCertFile"), top.string("KubeletKeyFile")
    if bool(cert_file) != bool(key_file):
        raise ConfigError("KubeletCertFile" if not cert_file else "KubeletKeyFile",
                          "KubeletCertFile and KubeletKeyFile must be given together")
    kubelet = KubeletSettings(
        address=address, port=port, cert_file=cert_file, key_file=key_file,
        disable_csr=top.boolean("DisableCSR"),
        csr_signer=top.string("KubeletCSRSignerName") or KubeletSettings.csr_signer,
        insecure=kubelet_http.boolean("Insecure"),
        cert_dir=top.string("KubeletCertDir"),
        csr_auto_approve=top.boolean("KubeletCSRAutoApprove"),
        client_ca_file=top.string("KubeletClientCAFile"),
        enabled=top.boolean("KubeletEnabled", True),
        declare_websocket=top.boolean("KubeletDeclareWebSocket", KubeletSettings.declare_websocket),
    )
    if kubelet.client_ca_file and not Path(kubelet.client_ca_file).exists():
        raise ConfigError("KubeletClientCAFile", f"file {kubelet.client_ca_file} does not exist")
    for key, file in (("KubeletCertFile", cert_file), ("KubeletKeyFile", key_file)):
        if file and not Path(file).exists():
            raise ConfigError(key, f"file {file} does not exist")

    # --- apiserver client
    api_port = top.string("KubernetesApiPort")
    if api_port and not api_port.isdigit():
        raise ConfigError("KubernetesApiPort", f"{api_port!r} is not a TCP port number")
    kube = KubeSettings(
        kubeconfig=env.get("KUBECONFIG", ""),
        qps=top.number("KubeAPIQPS", KubeSettings.qps, minimum=0),
        burst=top.integer("KubeAPIBurst", KubeSettings.burst, minimum=1),
        api_addr=top.string("KubernetesApiAddr"),
        api_port=api_port,
        api_ca_crt=top.string("KubernetesApiCaCrt"),
    )

    # --- pods
    pods = PodSettings(
        workers=top.integer("PodWorkers", PodSettings.workers, minimum=1, maximum=1000),
        status_period=top.number("StatusPeriodSeconds", PodSettings.status_period, minimum=0.1),
        status_batch_size=top.integer("StatusBatchSize", PodSettings.status_batch_size, minimum=1),
        create_backoff_cap=top.number("CreateBackoffCapSeconds", PodSettings.create_backoff_cap,
                                      minimum=1),
        missing_ref_retry=top.number("MissingReferenceRetrySeconds", PodSettings.missing_ref_retry,
                                     minimum=0.1),
        disable_projected_volumes=top.boolean("DisableProjectedVolumes"),
        skip_downward_api_resolution=top.boolean("SkipDownwardAPIResolution"),
        state_namespace=top.string("StateNamespace", PodSettings.state_namespace),
    )
    if problem := check_label_value(pods.state_namespace):
        raise ConfigError("StateNamespace", problem)

    logging_settings = LogSettings(verbose=top.boolean("VerboseLogging"),
                                   errors_only=top.boolean("ErrorsOnlyLogging"))
    health = HealthSettings(port=top.integer("HealthPort", HealthSettings.port, maximum=65535),
                            address=top.string("HealthAddress", HealthSettings.address))

    for key in top.unused():
        if key in INTERLINK_IGNORED_KEYS:
            warnings.append(f"config key {key} is ignored: {INTERLINK_IGNORED_KEYS[key]}")
        else:
            warnings.append(f"config key {key} is not known to vnode and is ignored")
    for reader in (http, tls, resources, kubelet_http, pod_cidr):
        for key in reader.unused():
            warnings.append(f"config key {reader.path(key)} is not known to vnode and is ignored")

    return Settings(plugin=plugin, node=node, kubelet=kubelet, kube=kube, pods=pods,
                    logging=logging_settings, health=health, config_path=config_path,
                    warnings=tuple(warnings))


def accelerator_capacity(accelerators: tuple[Accelerator, ...]) -> dict[str, str]:
    """Sum accelerators per resource type (interLink adds only non-zero totals)."""
    totals: dict[str, Any] = {}
    for acc in accelerators:
        totals[acc.resource_type] = totals.get(acc.resource_type, 0) + parse_quantity(acc.available)
    return {rtype: _format_quantity(total) for rtype, total in totals.items() if total > 0}


def _format_quantity(value: Any) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{int(value * 1000)}m"

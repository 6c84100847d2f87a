"""The agent's config: interLink's VirtualKubeletConfig keys accepted unchanged, vnode's own keys,
environment precedence, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.settings import (
    ConfigError,
    Taint,
    accelerator_capacity,
    load_settings,
    settings_from_mapping,
    settings_from_yaml,
)

# A config as interLink's Helm chart renders it (templates/virtual-kubelet-config.yaml), plus the
# keys interLink's Go struct knows that the chart leaves out.
INTERLINK_CONFIG = """
InterlinkURL: "http://localhost"
InterlinkPort: "4000"
KubernetesApiAddr: "10.0.0.1"
KubernetesApiPort: "6443"
KubernetesApiCaCrt: ""
DisableProjectedVolumes: false
JobScriptBuilderURL: ""
VKConfigPath: "/etc/interlink/InterLinkConfig.yaml"
VKTokenFile: "/dev/null"
ServiceAccount: "virtual-node"
Namespace: "interlink"
PodIP: "10.1.2.3"
VerboseLogging: true
ErrorsOnlyLogging: false
HTTP:
  Insecure: true
  CaCert: ""
KubeletHTTP:
  Insecure: true
KubeletCertFile: ""
KubeletKeyFile: ""
KubeletCSRSignerName: "clusterissuers.cert-manager.io/my-issuer"
Resources:
  CPU: "8"
  Memory: "49Gi"
  Pods: "100"
  Accelerators:
    - ResourceType: nvidia.com/gpu
      Model: a100
      Available: "4"
    - ResourceType: nvidia.com/gpu
      Model: a100
      Available: "2"
NodeLabels:
  - "accelerator=a100"
  - "site.example.org/zone=hpc"
NodeTaints:
  - Key: "gpu-only"
    Value: "true"
    Effect: "NoExecute"
TLS:
  Enabled: false
Network:
  EnableTunnel: false
  WildcardDNS: ""
SkipDownwardAPIResolution: false
DisableCSR: true
Pprof:
  Enabled: false
PodCIDR:
  Subnet: "10.10.0.0/24"
  MaxIP: 250
  MinIP: 2
"""


def load(text: str, **env: str) -> object:
    return settings_from_yaml(text, nodename="vn-1", env=env)


def test_interlink_config_is_accepted_unchanged() -> None:
    s = settings_from_yaml(INTERLINK_CONFIG, nodename="vn-1", env={})
    assert s.plugin.endpoint == "http://localhost:4000"
    assert s.plugin.insecure is True
    assert s.plugin.token_file == "/dev/null"
    assert s.node.cpu == "8" and s.node.memory == "49Gi" and s.node.pods == "100"
    assert s.node.labels == {"accelerator": "a100", "site.example.org/zone": "hpc"}
    assert s.node.taints == (Taint("gpu-only", "true", "NoExecute"),)
    assert s.node.internal_ip == "10.1.2.3"
    assert s.node.pod_cidr == "10.10.0.0/24"
    assert s.kube.api_addr == "10.0.0.1" and s.kube.api_port == "6443"
    assert s.kubelet.disable_csr is True
    assert s.kubelet.csr_signer == "clusterissuers.cert-manager.io/my-issuer"
    assert s.logging.verbose is True


def test_accelerators_of_one_type_are_summed_into_capacity() -> None:
    s = settings_from_yaml(INTERLINK_CONFIG, nodename="vn-1", env={})
    assert accelerator_capacity(s.node.accelerators) == {"nvidia.com/gpu": "6"}


def test_interlink_keys_vnode_does_not_implement_only_warn() -> None:
    s = settings_from_yaml(INTERLINK_CONFIG, nodename="vn-1", env={})
    assert any("Network" in w and "not implemented" in w for w in s.warnings)
    assert any("Pprof" in w for w in s.warnings)


def test_unknown_keys_are_accepted_with_a_warning_naming_them() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///run/p.sock", "SomethingNew": 1,
                               "HTTP": {"Insecure": False, "Extra": 2}}, nodename="n", env={})
    assert any("SomethingNew" in w for w in s.warnings)
    assert any("HTTP.Extra" in w for w in s.warnings)


def test_defaults_match_interlink_when_resources_are_absent() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///run/p.sock"}, nodename="n", env={})
    assert (s.node.cpu, s.node.memory, s.node.pods) == ("100", "3000G", "10000")
    assert s.plugin.endpoint == "unix:///run/p.sock"
    assert s.plugin.dialect == "plugin"


def test_vnode_keys_set_timings_workers_and_api_rate() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///p.sock", "Dialect": "interlink",
                               "StatusPeriodSeconds": 2, "PodWorkers": 50, "KubeAPIQPS": 200,
                               "KubeAPIBurst": 400, "PingPeriodSeconds": 3,
                               "LeaseDurationSeconds": 60, "StateNamespace": "vnode-system"},
                              nodename="n", env={})
    assert s.plugin.dialect == "interlink"
    assert s.pods.status_period == 2 and s.pods.workers == 50
    assert s.kube.qps == 200 and s.kube.burst == 400
    assert s.node.ping_period == 3
    assert s.node.lease_duration == 60 and s.node.lease_renew_period == 15
    assert s.pods.state_namespace == "vnode-system"


def test_environment_overrides_the_file_like_interlinks_vk() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///p.sock", "PodIP": "10.0.0.9",
                               "KubeletPort": 5820},
                              env={"NODENAME": "from-env", "POD_IP": "192.168.1.5",
                                   "KUBELET_PORT": "10250", "KUBELET_URL": "127.0.0.1",
                                   "KUBECONFIG": "/k"})
    assert s.node.name == "from-env"
    assert s.node.internal_ip == "192.168.1.5"
    assert s.kubelet.port == 10250 and s.kubelet.address == "127.0.0.1"
    assert s.kube.kubeconfig == "/k"


def test_the_nodename_flag_wins_over_the_environment() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///p.sock"}, nodename="flag",
                              env={"NODENAME": "env"})
    assert s.node.name == "flag"


def test_the_no_schedule_taint_in_config_is_not_duplicated() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///p.sock", "NodeTaints": [
        {"Key": "virtual-node.interlink/no-schedule", "Value": "true", "Effect": "NoSchedule"}]},
        nodename="n", env={})
    assert s.node.taints == ()


def test_a_taint_without_effect_defaults_to_no_schedule() -> None:
    s = settings_from_mapping({"InterlinkURL": "unix:///p.sock",
                               "NodeTaints": [{"Key": "a", "Value": "b"}]}, nodename="n", env={})
    assert s.node.taints == (Taint("a", "b", "NoSchedule"),)


@pytest.mark.parametrize(
    ("config", "key", "problem"),
    [
        ({"InterlinkURL": ""}, "InterlinkURL", "is required"),
        ({"InterlinkURL": "ftp://x"}, "InterlinkURL", "must start with unix://"),
        ({"InterlinkURL": "unix://relative.sock"}, "InterlinkURL", "absolute path"),
        ({"InterlinkURL": "http://h", "InterlinkPort": "http"}, "InterlinkPort", "not a TCP port"),
        ({"InterlinkURL": "http://h:1", "InterlinkPort": "2"}, "InterlinkPort", "conflicts"),
        ({"Resources": {"CPU": "lots"}}, "Resources.CPU", "not a Kubernetes quantity"),
        ({"Resources": {"Memory": "-1Gi"}}, "Resources.Memory", "must not be negative"),
        ({"Resources": {"Pods": "1.5"}}, "Resources.Pods", "whole number"),
        ({"Resources": {"Accelerators": [{"Available": "1"}]}},
         "Resources.Accelerators[0].ResourceType", "is required"),
        ({"Resources": {"Accelerators": [{"ResourceType": "nvidia.com/gpu", "Available": "x"}]}},
         "Resources.Accelerators[0].Available", "not a Kubernetes quantity"),
        ({"Resources": "8"}, "Resources", "expected a mapping"),
        ({"NodeLabels": ["novalue"]}, "NodeLabels[0]", "key=value"),
        ({"NodeLabels": ["bad key=v"]}, "NodeLabels[0]", "name 'bad key'"),
        ({"NodeLabels": "a=b"}, "NodeLabels", "expected a list"),
        ({"NodeTaints": [{"Key": "k", "Effect": "Sometimes"}]}, "NodeTaints[0].Effect", "not one of"),
        ({"NodeTaints": [{"Value": "v"}]}, "NodeTaints[0].Key", "Key is required"),
        ({"VerboseLogging": "yes please"}, "VerboseLogging", "expected true or false"),
        ({"Dialect": "grpc"}, "Dialect", "not one of plugin, interlink"),
        ({"PodWorkers": 0}, "PodWorkers", "at least 1"),
        ({"StatusPeriodSeconds": "soon"}, "StatusPeriodSeconds", "expected a number"),
        ({"KubeAPIBurst": True}, "KubeAPIBurst", "expected an integer"),
        ({"PodIP": "not-an-ip"}, "PodIP", "not an IP address"),
        ({"PodCIDR": {"Subnet": "10.0.0.0/99"}}, "PodCIDR.Subnet", "not a CIDR"),
        ({"KubeletCertFile": "/c.pem"}, "KubeletKeyFile", "must be given together"),
        ({"TLS": {"CertFile": "/nonexistent/c.pem", "KeyFile": "/nonexistent/k.pem"}},
         "TLS.CertFile", "does not exist"),
        ({"KubeletPort": "99999"}, "KubeletPort", "not a TCP port"),
    ],
)
def test_invalid_config_names_the_key_and_the_problem(config: dict[str, object], key: str,
                                                      problem: str) -> None:
    data = {"InterlinkURL": "unix:///p.sock", **config}
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, nodename="n", env={})
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert key in str(caught.value)


def test_missing_node_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"InterlinkURL": "unix:///p.sock"}, env={})
    assert caught.value.key == "NODENAME"


def test_invalid_node_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a valid node name"):
        settings_from_mapping({"InterlinkURL": "unix:///p.sock"}, nodename="Under_Score", env={})


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"InterlinkURL": "unix:///p.sock"}, nodename="n",
                              env={"KUBELET_PORT": "http"})
    assert caught.value.key == "KUBELET_PORT"
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"InterlinkURL": "unix:///p.sock"}, nodename="n",
                              env={"POD_IP": "300.1.1.1"})
    assert caught.value.key == "POD_IP"


def test_yaml_syntax_errors_give_the_line() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_yaml("InterlinkURL: [unclosed\n", nodename="n", env={})
    assert "not valid YAML" in caught.value.problem and "line" in caught.value.problem


def test_a_top_level_list_is_rejected() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        settings_from_yaml("- a\n- b\n", nodename="n", env={})


def test_an_empty_file_only_lacks_the_plugin_url() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_yaml("", nodename="n", env={})
    assert caught.value.key == "InterlinkURL"


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(str(missing), nodename="n", env={})
    assert str(missing) in caught.value.problem


def test_configpath_environment_variable_is_used(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("InterlinkURL: unix:///x.sock\n")
    s = load_settings(None, env={"CONFIGPATH": str(path), "NODENAME": "n"})
    assert s.config_path == str(path)
    assert s.plugin.endpoint == "unix:///x.sock"


def test_a_token_file_that_does_not_exist_yet_is_only_a_warning(tmp_path: Path) -> None:
    s = settings_from_mapping({"InterlinkURL": "https://h", "InterlinkPort": "443",
                               "VKTokenFile": str(tmp_path / "later")}, nodename="n", env={})
    assert s.plugin.endpoint == "https://h:443"
    assert any("VKTokenFile" in w for w in s.warnings)

"""The Helm chart, rendered with the real `helm` (built by hack/helm/build): interLink users' values
files install unchanged and map to the agent's config as deploy/README.md documents; bad values
fail with a message naming the value; RBAC stays least-privilege."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import EXAMPLES, MY_VALUES, Rendered, RenderError, render
from vnode.settings import settings_from_yaml

# interLink's chart README / examples, as its users write them (keys and shapes only).
INTERLINK_EDGE_REST: dict[str, Any] = {
    "nodeName": "interlink-with-rest",
    "interlink": {"address": "https://remote_oauth2_proxy_endpoint", "port": 30443},
    "virtualNode": {"CPUs": 1000, "MemGiB": 1600, "Pods": 100, "httpProxies": {"HTTP": None, "HTTPs": None}},
    "OAUTH": {"enabled": True, "TokenURL": "DUMMY", "ClientID": "DUMMY", "ClientSecret": "DUMMY",
              "RefreshToken": "DUMMY", "GrantType": "authorization_code", "Audience": "DUMMY"},
}
INTERLINK_EDGE_SOCKET: dict[str, Any] = {
    "nodeName": "interlink-with-socket",
    "interlink": {"enabled": True, "socket": "unix:///var/run/interlink.sock"},
    "plugin": {"address": "http://localhost"},
    "sshBastion": {"enabled": True, "clientKeys": {"authorizedKeys": "ssh-ed25519 AAAAC3Nza..."}, "port": 31021},
}
INTERLINK_IN_CLUSTER: dict[str, Any] = {
    "nodeName": "interlink-incluster-node",
    "interlink": {"enabled": True, "socket": "unix:///var/run/interlink.sock"},
    "plugin": {"enabled": True, "image": "ghcr.io/intertwin-eu/interlink/plugin-docker:latest",
               "socket": "unix:///var/run/plugin.sock",
               "config": 'InterlinkURL: "unix:///var/run/interlink.sock"\nSidecarURL: "unix:///var/run/plugin.sock"\n'},
    "virtualNode": {"resources": {"CPUs": 4, "memGiB": 16, "pods": 50}},
}


# The shapes of every key in interLink's chart defaults (interlink/values.yaml): users often copy the
# whole file and edit it, so it must render under vnode's chart too.
INTERLINK_DEFAULTS_SHAPE: dict[str, Any] = {
    "nodeName": "virtual-node",
    "interlink": {"image": "ghcr.io/interlink-hq/interlink/interlink:latest", "enabled": False,
                  "exportPodData": False, "skipDownwardAPIResolution": False, "dataRootVolume": "", "socket": "",
                  "address": "http://localhost", "port": 4000, "kubernetesApiAddr": "", "kubernetesApiPort": "",
                  "kubernetesApiCaCrt": "", "disableProjectedVolumes": False,
                  "tls": {"enabled": False, "certFile": "", "keyFile": "", "caCertFile": ""},
                  "logging": {"verboseLogging": False, "errorsOnlyLogging": False}, "tracing": {"enabled": False},
                  "pluginEndpoint": {"url": "", "port": ""},
                  "resources": {"CPU": {"request": "100m", "limit": "500m"},
                                "memory": {"request": "128Mi", "limit": "512Mi"}}, "extraVolumeMounts": []},
    "virtualNode": {"image": "ghcr.io/interlink-hq/interlink/virtual-kubelet-inttw:latest",
                    "resources": {"CPUs": 8, "memGiB": 49, "pods": 100}, "HTTPProxies": {"HTTP": None, "HTTPs": None},
                    "HTTP": {"insecure": True, "CACert": ""}, "kubeletHTTP": {"insecure": True},
                    "tracing": {"enabled": False},
                    "containerResources": {"CPU": {"request": "100m", "limit": "500m"},
                                           "memory": {"request": "128Mi", "limit": "512Mi"}},
                    "extraVolumeMounts": [], "disableCSR": False,
                    "network": {"enableTunnel": False, "tunnelImage": "ghcr.io/erebe/wstunnel:latest",
                                "wildcardDNS": "", "ingressTLS": False, "ingressClusterIssuer": "",
                                "wstunnelTemplatePath": "/etc/templates/wstunnel.yaml", "templateType": "",
                                "customTemplate": "", "wstunnelCommand": "curl ... &\n", "fullMesh": False,
                                "serviceCIDR": "", "podCIDRCluster": "", "dnsServiceIP": "", "shadowMode": "",
                                "ssh": {"loginHost": "", "user": "", "port": 22, "extraOptions": [],
                                        "replicateCredentials": True, "reverse": {"enabled": False}}}},
    "plugin": {"enabled": False, "image": "", "command": [], "args": [], "config": "", "envs": [], "socket": None,
               "address": "", "port": 3000, "privileged": False,
               "resources": {"CPU": {"request": "500m", "limit": "2"}, "memory": {"request": "500Mi", "limit": "2Gi"}},
               "extraVolumeMounts": []},
    "sshBastion": {"enabled": False, "image": "lscr.io/linuxserver/openssh-server:latest",
                   "clientKeys": {"authorizedKeys": "", "keysURL": ""}, "hostKeys": {"priv": "", "pub": ""},
                   "port": 31022, "resources": {"CPU": {"request": "50m", "limit": "100m"},
                                                "memory": {"request": "64Mi", "limit": "128Mi"}},
                   "extraVolumeMounts": []},
    "OAUTH": {"enabled": False, "image": "ghcr.io/interlink-hq/interlink/virtual-kubelet-inttw-refresh:latest",
              "TokenURL": "DUMMY", "ClientID": "DUMMY", "ClientSecret": "DUMMY", "RefreshToken": "DUMMY",
              "GrantType": "authorization_code", "Audience": "DUMMY",
              "resources": {"CPU": {"request": "100m", "limit": "200m"}, "memory": {"request": "300Mi", "limit": "500Mi"}},
              "extraVolumeMounts": []},
    "extraVolumes": [], "extraContainers": [], "extraInitContainers": [],
    "podScheduling": {"nodeSelector": {}, "tolerations": []},
}


def rendered(tmp_path: Path, *values: Path | dict[str, Any]) -> Rendered:
    return render(*values, tmp_dir=tmp_path)


def render_error(tmp_path: Path, *values: Path | dict[str, Any]) -> str:
    with pytest.raises(RenderError) as err:
        render(*values, tmp_dir=tmp_path)
    return err.value.stderr


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- the seed's my-values.yaml (tunneled scenario) --------------------------------------------------


def test_my_values_agent_talks_to_the_plugin_socket_directly_without_an_interlink_container(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES)
    config = r.agent_config()
    assert config["InterlinkURL"] == "unix:///var/run/plugin.sock"
    assert "InterlinkPort" not in config
    assert config["Dialect"] == "plugin"
    assert r.container_names() == ["vk", "ssh-bastion"]
    assert r.mounts("vk")["/var/run"] == "sockets"
    assert r.mounts("ssh-bastion")["/var/run"] == "sockets"


def test_my_values_bastion_service_secret_and_sshd_config(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES)
    values = yaml.safe_load(MY_VALUES.read_text())
    service = r.one("Service", "ssh-bastion-vnode-demo")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [{"name": "ssh", "port": 2222, "targetPort": "ssh", "nodePort": 31022}]
    assert service["spec"]["selector"] == r.deployment["spec"]["selector"]["matchLabels"]
    keys = base64.b64decode(r.one("Secret", "vnode-demo-ssh-keys")["data"]["authorized_keys"]).decode()
    assert keys == values["sshBastion"]["clientKeys"]["authorizedKeys"] + "\n"
    sshd = r.one("ConfigMap", "vnode-demo-sshd-config")["data"]["sshd_config"]
    options = dict(line.split(None, 1) for line in sshd.splitlines() if line and not line.startswith("#"))
    assert options["AllowStreamLocalForwarding"] == "remote"
    assert options["PasswordAuthentication"] == "no"
    assert options["PermitTTY"] == "no"
    assert options["StreamLocalBindUnlink"] == "yes"


def test_my_values_agent_config_is_valid_for_the_agent_with_the_seed_capacity(tmp_path: Path) -> None:
    text = rendered(tmp_path, MY_VALUES).agent_config_text()
    settings = settings_from_yaml(text, env={"NODENAME": "vnode-demo", "POD_IP": "10.1.2.3"})
    assert settings.plugin.endpoint == "unix:///var/run/plugin.sock"
    assert settings.plugin.dialect == "plugin"
    assert (settings.node.cpu, settings.node.memory, settings.node.pods) == ("8", "16Gi", "100")
    assert dict(settings.node.labels) == {"accelerator": "none", "site": "hpc-demo"}


def test_every_rendered_agent_config_key_is_known_to_the_agent(tmp_path: Path) -> None:
    for values in (MY_VALUES, *sorted(EXAMPLES.glob("values-*.yaml"))):
        text = rendered(tmp_path, values).agent_config_text()
        settings = settings_from_yaml(text, env={"NODENAME": "vnode-demo"})
        unknown = [w for w in settings.warnings if "not known" in w]
        assert not unknown, f"{values.name}: {unknown}"


def test_interlinks_whole_default_values_file_under_my_values_renders_the_same_agent(tmp_path: Path) -> None:
    layered = rendered(tmp_path, INTERLINK_DEFAULTS_SHAPE, MY_VALUES)
    alone = rendered(tmp_path, MY_VALUES).agent_config()
    config = layered.agent_config()
    # interLink's defaults skip TLS verification; everything else is what my-values.yaml alone gives
    assert config.pop("HTTP") == {"Insecure": True} and config.pop("KubeletHTTP") == {"Insecure": True}
    assert config == {k: v for k, v in alone.items() if k not in ("HTTP", "KubeletHTTP")}
    assert layered.container_names() == ["vk", "ssh-bastion"]
    assert layered.container("vk")["image"].startswith("vnode/agent:")  # virtualNode.image is interLink's VK


def test_agent_container_gets_interlinks_env_and_probes_on_the_health_port(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES)
    vk = r.container("vk")
    env = env_of(vk)
    assert env["NODENAME"] == "vnode-demo"
    assert env["CONFIGPATH"] == "/etc/interlink/InterLinkConfig.yaml"
    assert env["KUBELET_PORT"] == "10250"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    ports = {p["name"]: p["containerPort"] for p in vk["ports"]}
    assert ports == {"kubelet": 10250, "health": r.agent_config()["HealthPort"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert vk[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert vk["securityContext"]["runAsNonRoot"] is True
    assert vk["securityContext"]["readOnlyRootFilesystem"] is True


def test_one_agent_per_node_even_during_an_upgrade(tmp_path: Path) -> None:
    spec = rendered(tmp_path, MY_VALUES).deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_config_change_rolls_the_pod(tmp_path: Path) -> None:
    a = rendered(tmp_path, MY_VALUES).deployment["spec"]["template"]["metadata"]["annotations"]
    b = rendered(tmp_path, MY_VALUES, {"virtualNode": {"resources": {"CPUs": 9}}}).deployment
    assert b["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != a["checksum/config"]


# --- interLink's other scenarios ----------------------------------------------------------------------


def test_interlink_edge_rest_values_talk_interlink_dialect_to_the_remote_api_with_the_token(tmp_path: Path) -> None:
    r = rendered(tmp_path, INTERLINK_EDGE_REST)
    config = r.agent_config()
    assert (config["InterlinkURL"], config["InterlinkPort"], config["Dialect"]) == (
        "https://remote_oauth2_proxy_endpoint", "30443", "interlink")
    assert config["VKTokenFile"] == "/opt/interlink/token"
    # interLink's older flat keys virtualNode.CPUs/MemGiB/Pods
    assert config["Resources"] == {"CPU": "1000", "Memory": "1600Gi", "Pods": "100"}
    assert r.container_names() == ["vk", "refresh-token"]
    assert r.mounts("vk")["/opt/interlink"] == r.mounts("refresh-token")["/opt/interlink"] == "token"


def test_interlink_edge_socket_values_reach_the_plugin_on_localhost_through_the_bastion(tmp_path: Path) -> None:
    r = rendered(tmp_path, INTERLINK_EDGE_SOCKET)
    config = r.agent_config()
    assert (config["InterlinkURL"], config["InterlinkPort"], config["Dialect"]) == ("http://localhost", "3000", "plugin")
    assert r.container_names() == ["vk", "ssh-bastion"]
    assert r.one("Service")["spec"]["ports"][0]["nodePort"] == 31021


def test_interlink_in_cluster_values_run_their_plugin_image_next_to_the_agent(tmp_path: Path) -> None:
    r = rendered(tmp_path, INTERLINK_IN_CLUSTER)
    config = r.agent_config()
    assert (config["InterlinkURL"], config["Dialect"]) == ("unix:///var/run/plugin.sock", "plugin")
    assert r.container_names() == ["vk", "plugin"]
    plugin = r.container("plugin")
    assert plugin["image"] == "ghcr.io/intertwin-eu/interlink/plugin-docker:latest"
    assert r.mounts("plugin") == {"/etc/interlink/plugin.yaml": "plugin-config", "/var/run": "sockets"}
    assert r.one("ConfigMap", "interlink-incluster-node-plugin-config")["data"]["plugin.yaml"] == \
        INTERLINK_IN_CLUSTER["plugin"]["config"]


def test_vnode_plugin_image_is_the_default_in_cluster_plugin(tmp_path: Path) -> None:
    r = rendered(tmp_path, EXAMPLES / "values-incluster.yaml")
    plugin = r.container("plugin")
    assert plugin["image"].startswith("vnode/slurm-plugin:")
    assert plugin["args"] == ["--config", "/etc/interlink/plugin.yaml"]
    assert env_of(plugin)["SLURMCONFIGPATH"] == "/etc/interlink/plugin.yaml"
    assert plugin["securityContext"]["runAsUser"] == r.container("vk")["securityContext"]["runAsUser"]


def test_dialect_interlink_keeps_interlinks_api_server_in_the_pod(tmp_path: Path) -> None:
    r = rendered(tmp_path, INTERLINK_IN_CLUSTER, {"vnode": {"dialect": "interlink"}})
    config = r.agent_config()
    assert (config["InterlinkURL"], config["Dialect"]) == ("unix:///var/run/interlink.sock", "interlink")
    assert r.container_names() == ["vk", "plugin", "interlink"]
    api = yaml.safe_load(r.one("ConfigMap", "interlink-incluster-node-interlink-config")["data"]["InterLinkConfig.yaml"])
    assert api["InterlinkAddress"] == "unix:///var/run/interlink.sock"
    assert api["SidecarURL"] == "unix:///var/run/plugin.sock"


@pytest.mark.parametrize(("values", "url", "port"), [
    ({"interlink": {"enabled": True, "pluginEndpoint": {"url": "http://plugin.hpc", "port": 4000}}},
     "http://plugin.hpc", "4000"),
    ({"interlink": {"enabled": True}, "plugin": {"address": "http://127.0.0.1", "port": 3001}},
     "http://127.0.0.1", "3001"),
    ({"plugin": {"enabled": True, "socket": "unix:///run/p/plugin.sock"}}, "unix:///run/p/plugin.sock", None),
])
def test_plugin_endpoint_precedence(tmp_path: Path, values: dict[str, Any], url: str, port: str | None) -> None:
    config = rendered(tmp_path, values).agent_config()
    assert (config["InterlinkURL"], config.get("InterlinkPort"), config["Dialect"]) == (url, port, "plugin")


def test_edge_to_a_remote_vnode_plugin_with_dialect_plugin(tmp_path: Path) -> None:
    config = rendered(tmp_path, {"interlink": {"address": "https://login.hpc:8443", "port": ""},
                                 "vnode": {"dialect": "plugin"}}).agent_config()
    assert (config["InterlinkURL"], config.get("InterlinkPort"), config["Dialect"]) == (
        "https://login.hpc:8443", None, "plugin")


def test_tunnel_out_sidecar_forwards_the_agent_socket_to_the_login_node(tmp_path: Path) -> None:
    r = rendered(tmp_path, EXAMPLES / "values-tunnel-out.yaml")
    tunnel = r.container("ssh-tunnel")
    env = env_of(tunnel)
    assert env["TUNNEL_LOCAL_SOCKET"] == "/var/run/plugin.sock" == r.agent_config()["InterlinkURL"][len("unix://"):]
    assert env["TUNNEL_REMOTE_SOCKET"] == "/home/alice/.vnode/plugin.sock"
    assert env["TUNNEL_DESTINATION"] == "alice@login.hpc.example.org"
    assert env["TUNNEL_KNOWN_HOSTS"] == "/etc/vnode-tunnel/known_hosts"
    assert tunnel["args"] == ["tunnel"]
    assert r.mounts("ssh-tunnel")["/var/run"] == "sockets"
    assert tunnel["securityContext"]["runAsUser"] == 10001


# --- value shapes ---------------------------------------------------------------------------------------


def test_large_and_fractional_numbers_render_as_kubernetes_quantities(tmp_path: Path) -> None:
    config = rendered(tmp_path, {"virtualNode": {"resources": {"CPUs": 2000000, "memGiB": 1.5, "pods": "300"}}}
                      ).agent_config()
    assert config["Resources"] == {"CPU": "2000000", "Memory": "1.5Gi", "Pods": "300"}


def test_accelerators_labels_and_taints_become_interlinks_config_keys(tmp_path: Path) -> None:
    r = rendered(tmp_path, {"virtualNode": {
        "resources": {"accelerators": [{"resourceType": "nvidia.com/gpu", "model": "a100", "available": 4}]},
        "nodeLabels": ["gpu=a100"],
        "nodeTaints": [{"key": "accelerator", "value": "a100", "effect": "NoSchedule"}, {"key": "hpc"}]}})
    config = r.agent_config()
    assert config["Resources"]["Accelerators"] == [{"ResourceType": "nvidia.com/gpu", "Model": "a100", "Available": "4"}]
    assert config["NodeLabels"] == ["gpu=a100"]
    assert config["NodeTaints"] == [{"Key": "accelerator", "Value": "a100", "Effect": "NoSchedule"},
                                    {"Key": "hpc", "Value": "", "Effect": "NoSchedule"}]
    settings = settings_from_yaml(r.agent_config_text(), env={"NODENAME": "virtual-node"})
    assert [t.key for t in settings.node.taints] == ["accelerator", "hpc"]


def test_extra_config_passes_vnode_keys_to_the_agent(tmp_path: Path) -> None:
    config = rendered(tmp_path, {"vnode": {"extraConfig": {"PodWorkers": 50, "PingPeriodSeconds": 5}}}).agent_config()
    assert (config["PodWorkers"], config["PingPeriodSeconds"]) == (50, 5)


def test_interlinks_unimplemented_networking_is_passed_on_for_the_agent_to_warn_about(tmp_path: Path) -> None:
    text = rendered(tmp_path, {"virtualNode": {"network": {"enableTunnel": True}}}).agent_config_text()
    settings = settings_from_yaml(text, env={"NODENAME": "virtual-node"})
    assert any("Network" in w and "not implemented" in w for w in settings.warnings)


def test_kubelet_cert_secret_replaces_the_csr(tmp_path: Path) -> None:
    r = rendered(tmp_path, {"vnode": {"kubeletCert": {"secretName": "node-tls"}}, "virtualNode": {"disableCSR": True}})
    config = r.agent_config()
    assert (config["KubeletCertFile"], config["KubeletKeyFile"]) == ("/etc/vnode/kubelet-tls/tls.crt",
                                                                    "/etc/vnode/kubelet-tls/tls.key")
    assert r.mounts("vk")["/etc/vnode/kubelet-tls"] == "kubelet-tls"
    rules = r.one("ClusterRole")["rules"]
    assert not [rule for rule in rules if "certificates.k8s.io" in rule["apiGroups"]]


# --- bad values: one clear message naming the value ----------------------------------------------------


@pytest.mark.parametrize(("values", "message"), [
    ({"sshBastion": {"enabled": True}}, "sshBastion.clientKeys.authorizedKeys: required"),
    ({"sshBastion": {"enabled": True, "port": 2222, "clientKeys": {"authorizedKeys": "ssh-ed25519 AAAA x"}}},
     "sshBastion.port: 2222 is outside the NodePort range"),
    ({"nodeName": "Bad_Name"}, 'nodeName: "Bad_Name" is not a valid node name'),
    ({"plugin": {"socket": "/var/run/plugin.sock"}}, 'plugin.socket: "/var/run/plugin.sock" must be unix:///'),
    ({"interlink": {"enabled": True}}, "plugin.socket: the agent talks to the plugin directly"),
    ({"vnode": {"dialect": "grpc"}}, 'vnode.dialect: "grpc" is not one of'),
    ({"interlink": {"address": "ftp://x"}}, 'agent endpoint "ftp://x" must start with'),
    ({"vnode": {"sshTunnel": {"enabled": True, "destination": "a@b", "remoteSocket": "/s", "keySecret": "k"}}},
     "vnode.sshTunnel.enabled: the agent endpoint is not a unix socket"),
    ({"extraContainers": [{"name": "vk", "image": "x"}]}, 'extraContainers: the name "vk" is taken'),
    ({"virtualNode": {"nodeTaints": [{"value": "x"}]}}, "virtualNode.nodeTaints[0].key is required"),
])
def test_bad_values_fail_naming_the_value(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    assert message in render_error(tmp_path, values)


# --- RBAC -------------------------------------------------------------------------------------------------


def rules_of(r: Rendered, kind: str, name: str) -> list[dict[str, Any]]:
    return list(r.one(kind, name)["rules"])


def verbs_for(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for rule in rules if group in rule["apiGroups"] and resource in rule["resources"] for v in rule["verbs"]}


def test_rbac_has_no_wildcards_and_binds_no_builtin_role(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES, {"vnode": {"csrApprover": {"enabled": True}}})
    for kind in ("ClusterRole", "Role"):
        for role in r.all(kind):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
                assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"] and "impersonate" not in rule["verbs"]
    for binding in r.all("ClusterRoleBinding") + r.all("RoleBinding"):
        assert binding["roleRef"]["name"].startswith("vnode-demo-vnode-"), binding["roleRef"]


def test_rbac_writes_only_its_own_node_and_never_deletes_nodes(tmp_path: Path) -> None:
    rules = rules_of(rendered(tmp_path, MY_VALUES), "ClusterRole", "vnode-demo-vnode-agent")
    assert verbs_for(rules, "", "nodes") == {"create", "get", "patch", "update"}
    for rule in rules:
        if "nodes" in rule["resources"] or "nodes/status" in rule["resources"]:
            assert rule["verbs"] == ["create"] or rule["resourceNames"] == ["vnode-demo"], rule


def test_rbac_grants_what_the_agent_calls(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES)
    rules = rules_of(r, "ClusterRole", "vnode-demo-vnode-agent")
    assert verbs_for(rules, "", "pods") == {"get", "list", "watch", "delete"}  # the JobID annotation rides on pods/status
    assert verbs_for(rules, "", "pods/status") == {"patch", "update"}
    assert verbs_for(rules, "", "nodes/status") == {"get", "patch", "update"}
    assert verbs_for(rules, "", "configmaps") == verbs_for(rules, "", "secrets") == {"get"}
    assert verbs_for(rules, "", "serviceaccounts/token") == {"create"}
    assert verbs_for(rules, "", "events") == {"create", "patch"}
    assert verbs_for(rules, "authentication.k8s.io", "tokenreviews") == {"create"}
    assert verbs_for(rules, "authorization.k8s.io", "subjectaccessreviews") == {"create"}
    assert verbs_for(rules, "certificates.k8s.io", "certificatesigningrequests") == {"create", "get", "list", "watch", "delete"}
    lease_role = r.one("Role", "vnode-demo-vnode-agent")
    assert lease_role["metadata"]["namespace"] == "kube-node-lease"
    assert verbs_for(lease_role["rules"], "coordination.k8s.io", "leases") == {"create", "get", "update", "patch"}
    assert verbs_for(lease_role["rules"], "", "configmaps") == {"create", "get", "update"}


def test_csr_approval_rbac_only_when_the_approver_is_enabled(tmp_path: Path) -> None:
    assert not [o for o in rendered(tmp_path, MY_VALUES).all("ClusterRole") if "approver" in o["metadata"]["name"]]
    r = rendered(tmp_path, MY_VALUES, {"vnode": {"csrApprover": {"enabled": True}}})
    rules = rules_of(r, "ClusterRole", "vnode-demo-vnode-csr-approver")
    assert verbs_for(rules, "certificates.k8s.io", "certificatesigningrequests/approval") == {"update"}
    signer = [rule for rule in rules if "signers" in rule["resources"]]
    assert signer == [{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                       "resourceNames": ["kubernetes.io/kubelet-serving"], "verbs": ["approve"]}]
    assert r.one("ClusterRoleBinding", "vnode-demo-vnode-csr-approver")["subjects"][0]["name"] == "vnode-demo"
    assert r.agent_config()["KubeletCSRAutoApprove"] is True


def test_ledger_namespace_other_than_kube_node_lease_gets_its_own_role(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES, {"vnode": {"stateNamespace": "vnode-state"}})
    ledger = r.one("Role", "vnode-demo-vnode-ledger")
    assert ledger["metadata"]["namespace"] == "vnode-state"
    assert verbs_for(ledger["rules"], "", "configmaps") == {"create", "get", "update"}
    assert verbs_for(r.one("Role", "vnode-demo-vnode-agent")["rules"], "", "configmaps") == set()
    assert r.agent_config()["StateNamespace"] == "vnode-state"


def test_rbac_and_service_account_can_be_left_to_the_operator(tmp_path: Path) -> None:
    r = rendered(tmp_path, MY_VALUES, {"vnode": {"rbac": {"create": False},
                                                 "serviceAccount": {"create": False, "name": "vk-sa"}}})
    assert not r.all("ClusterRole") and not r.all("Role") and not r.all("ServiceAccount")
    assert r.deployment["spec"]["template"]["spec"]["serviceAccountName"] == "vk-sa"


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(group, resource, resourceName or '*', verb) of every rule."""
    return {(g, res, name, verb) for rule in rules for g in rule["apiGroups"] for res in rule["resources"]
            for name in (rule.get("resourceNames") or ["*"]) for verb in rule["verbs"]}


def test_chart_grants_every_rule_the_kubelet_endpoint_documents(tmp_path: Path) -> None:
    """vnode/kubelet/README.md's RBAC blocks (which the kubelet's own integration test applies) are
    covered by the chart's roles when the approver is on."""
    readme = (Path(__file__).resolve().parents[2] / "vnode" / "kubelet" / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    documented = [r for b in blocks for d in yaml.safe_load_all(b) if d and d.get("kind") == "ClusterRole"
                  for r in d["rules"]]
    assert documented, "no RBAC blocks found in vnode/kubelet/README.md"
    r = rendered(tmp_path, MY_VALUES, {"vnode": {"csrApprover": {"enabled": True}}})
    chart = granted([rule for role in r.all("ClusterRole") for rule in role["rules"]])
    missing = granted(documented) - chart
    assert not missing, f"the chart lacks {sorted(missing)}"

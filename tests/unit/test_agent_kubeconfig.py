"""Reading kubeconfig files and the in-cluster service account the way client-go does, without
kubernetes_asyncio: merged files, relative paths, embedded data, token files, exec plugins, and
errors that name the field."""

from __future__ import annotations

import base64
import json
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from vnode.kube import kubeconfig
from vnode.kube.kubeconfig import (
    ExecToken,
    FileToken,
    KubeconfigError,
    StaticToken,
    load_incluster,
    load_kubeconfig,
    parse_exec_credential,
    ssl_context,
)


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def config(cluster: dict[str, Any], user: dict[str, Any], *, context: str = "ctx",
           namespace: str = "") -> dict[str, Any]:
    ctx: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": ctx}]}


def test_embedded_certificates_become_private_files(tmp_path: Path) -> None:
    ca, crt, key = b"CA PEM", b"CERT PEM", b"KEY PEM"
    path = write(tmp_path / "kc", config(
        {"server": "https://10.0.0.1:6443/", "certificate-authority-data": base64.b64encode(ca).decode()},
        {"client-certificate-data": base64.b64encode(crt).decode(),
         "client-key-data": base64.b64encode(key).decode()}))
    access = load_kubeconfig(str(path))
    assert access.host == "https://10.0.0.1:6443"
    assert access.ssl_ca_cert and Path(access.ssl_ca_cert).read_bytes() == ca
    assert access.cert_file and Path(access.cert_file).read_bytes() == crt
    assert access.key_file and Path(access.key_file).read_bytes() == key
    assert stat.S_IMODE(Path(access.key_file).stat().st_mode) == 0o600
    assert access.token_source is None and access.verify_ssl


def test_relative_paths_are_relative_to_the_file_that_names_them(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ca.crt").write_text("ca")
    path = write(tmp_path / "sub" / "kc", config({"server": "https://h:1", "certificate-authority": "ca.crt"},
                                                 {"token": "abc"}))
    access = load_kubeconfig(str(path))
    assert access.ssl_ca_cert == str(tmp_path / "sub" / "ca.crt")


async def test_several_files_merge_with_the_first_definition_winning(tmp_path: Path) -> None:
    first = write(tmp_path / "a", {"current-context": "ctx", "users": [{"name": "u", "user": {"token": "first"}}]})
    second = write(tmp_path / "b", config({"server": "https://h:1"}, {"token": "second"}, context="other"))
    access = load_kubeconfig(f"{first}:{second}")
    assert access.host == "https://h:1"
    assert access.token_source is not None and await access.token_source.token() == "first"


def test_insecure_tls_server_name_proxy_and_namespace(tmp_path: Path) -> None:
    path = write(tmp_path / "kc", config({"server": "https://h:1", "insecure-skip-tls-verify": True,
                                          "tls-server-name": "kubernetes", "proxy-url": "http://proxy:3128"},
                                         {"token": "t"}, namespace="team"))
    access = load_kubeconfig(str(path))
    assert (access.verify_ssl, access.tls_server_name, access.proxy, access.namespace) == \
        (False, "kubernetes", "http://proxy:3128", "team")
    ctx = ssl_context(access)
    assert ctx is not None and not ctx.check_hostname


@pytest.mark.parametrize(("doc", "field"), [
    ({"current-context": "", "contexts": []}, "current-context"),
    ({"current-context": "nope"}, "current-context"),
    (config({"server": "h:1"}, {}), "clusters[c].cluster.server"),
    (config({"server": "https://h:1", "certificate-authority": "/no/such/ca"}, {}),
     "clusters[c].cluster.certificate-authority"),
    (config({"server": "https://h:1"}, {"auth-provider": {"name": "oidc"}}), "users[u].user.auth-provider"),
    (config({"server": "https://h:1"}, {"username": "admin", "password": "x"}), "users[u].user.username"),
    (config({"server": "https://h:1"}, {"client-certificate-data": "Zm9v"}), "users[u].user"),
    (config({"server": "https://h:1"}, {"exec": {"args": ["x"]}}), "users[u].user.exec.command"),
])
def test_unusable_kubeconfigs_name_the_field(tmp_path: Path, doc: dict[str, Any], field: str) -> None:
    path = write(tmp_path / "kc", doc)
    with pytest.raises(KubeconfigError) as err:
        load_kubeconfig(str(path))
    assert field in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=str(tmp_path / "absent")):
        load_kubeconfig(str(tmp_path / "absent"))


async def test_token_files_are_reread_after_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    source = FileToken(token)
    assert await source.token() == "one"
    token.write_text("two")
    assert await source.token() == "one"  # cached
    monkeypatch.setattr(kubeconfig, "TOKEN_FILE_REFRESH", 0.0)
    assert await source.token() == "two"


def _plugin(tmp_path: Path, body: dict[str, Any]) -> tuple[Path, Path]:
    """An exec credential plugin (a Python script) that counts its runs."""
    runs = tmp_path / "runs"
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(runs)!r}, 'a').write('x')\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential' and os.environ['EXTRA'] == 'yes'\n"
        f"print(json.dumps({body!r}))\n")
    return script, runs


async def test_exec_plugins_run_once_until_their_credential_expires(tmp_path: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    script, runs = _plugin(tmp_path, {"apiVersion": "client.authentication.k8s.io/v1",
                                      "kind": "ExecCredential",
                                      "status": {"token": "exec-token", "expirationTimestamp": soon}})
    path = write(tmp_path / "kc", config({"server": "https://h:1"}, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
        "args": [str(script)], "env": [{"name": "EXTRA", "value": "yes"}]}}))
    access = load_kubeconfig(str(path))
    assert isinstance(access.token_source, ExecToken)
    assert [await access.bearer_token() for _ in range(3)] == ["exec-token"] * 3
    assert runs.read_text() == "x"


async def test_a_failing_exec_plugin_says_what_failed(tmp_path: Path) -> None:
    source = ExecToken(command=sys.executable, args=("-c", "import sys; sys.exit('no network')"))
    with pytest.raises(KubeconfigError, match="no network"):
        await source.token()


def test_exec_credentials_without_expiry_never_expire_and_certificates_are_refused() -> None:
    token, expires = parse_exec_credential(json.dumps({"status": {"token": "t"}}).encode())
    assert token == "t" and expires == float("inf")
    with pytest.raises(KubeconfigError, match="client certificates"):
        parse_exec_credential(json.dumps({"status": {"clientCertificateData": "x"}}).encode())
    with pytest.raises(KubeconfigError, match="ExecCredential"):
        parse_exec_credential(b"not json")


async def test_in_cluster_reads_the_mounted_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("vnode\n")
    access = load_incluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                            tmp_path)
    assert access.host == "https://[fd00::1]:443"
    assert access.ssl_ca_cert == str(tmp_path / "ca.crt") and access.namespace == "vnode"
    assert await access.bearer_token() == "sa-token"


def test_outside_a_cluster_without_a_kubeconfig_says_so(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_HOST"):
        load_incluster({}, tmp_path)
    with pytest.raises(KubeconfigError, match="token"):
        load_incluster({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}, tmp_path)


async def test_a_static_token_is_the_bearer_token() -> None:
    assert await StaticToken("x").token() == "x"


def test_vnode_run_with_an_unusable_kubeconfig_prints_one_line_and_exits_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vnode.cli import main

    config = tmp_path / "vnode.yaml"
    config.write_text("InterlinkURL: unix:///run/nowhere.sock\nKubeletEnabled: false\n")
    kc = write(tmp_path / "kc", {**config_doc(), "users": [{"name": "u", "user": {"auth-provider": {"name": "oidc"}}}]})
    monkeypatch.setenv("KUBECONFIG", str(kc))
    assert main(["run", "--config", str(config), "--nodename", "vn-test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("vnode: users[u].user.auth-provider: auth-provider plugins were removed from "
                       "kubectl; use an exec credential plugin")


def config_doc() -> dict[str, Any]:
    return config({"server": "https://127.0.0.1:9"}, {})

"""vnode's SPDY/3.1 exec server against client-go's own remotecommand client.

The peer is tests/interop/spdyclient: client-go's SPDY round-tripper and executor, the very
code the kube-apiserver uses to reach a kubelet. No apiserver is involved here; the kubelet
front runs in-process with an exec backend that spawns real local processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trustme

from tests.gobuild import go_binary
from tests.kubelet_support import (
    InMemoryReviews,
    NoExec,
    StaticLogs,
    StaticPods,
    SubprocessExec,
    make_pod,
)
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.backends import UserInfo
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

pytestmark = pytest.mark.integration

NODE = "vnode-interop"


@pytest.fixture(scope="session")
def spdyclient() -> Path:
    return go_binary("spdyclient")


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        self.root = root
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert = root / "server.pem"
        self.server_key = root / "server.key"
        server.private_key_pem.write_to_path(str(self.server_key))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))

    def client(self, cn: str, *orgs: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert(common_name=cn, organization_name=orgs[0] if orgs else None)
        cert, key = self.root / f"{cn}.pem", self.root / f"{cn}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def reviews() -> InMemoryReviews:
    return InMemoryReviews(
        tokens={"good-token": UserInfo("alice", "u1", ("devs",))},
        grants={"apiserver": {("*", "*")}, "alice": {("create", "proxy")}},
    )


@pytest.fixture
def backend() -> SubprocessExec:
    return SubprocessExec()


@pytest.fixture
async def kubelet(pki: Pki, reviews: InMemoryReviews, backend: SubprocessExec):
    server = KubeletServer(
        KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0),
        tls=ServingTLS(pki.server_cert, pki.server_key, pki.ca_file),
        authority=RequestAuthority(reviews, NODE),
        pods=StaticPods([make_pod("ns1", "pod1", containers=("main", "side"))]),
        logs=StaticLogs(b"hello\n"),
        execs=backend,
    )
    async with server:
        yield server


async def run_client(
    binary: Path, url: str, *args: str, stdin: bytes | None = None, timeout: float = 120
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        str(binary), "-url", url, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


def exec_url(server: KubeletServer, command: list[str], *, stdin: bool = False, tty: bool = False,
             stderr: bool = True, pod: str = "pod1", container: str = "main", verb: str = "exec") -> str:
    query = [("command", c) for c in command] + [("output", "1")]
    if stderr:
        query.append(("error", "1"))
    if stdin:
        query.append(("input", "1"))
    if tty:
        query.append(("tty", "1"))
    return f"https://127.0.0.1:{server.port}/{verb}/ns1/{pod}/{container}?{urlencode(query)}"


@pytest.fixture
def apiserver_identity(pki: Pki) -> list[str]:
    cert, key = pki.client("apiserver", "system:masters")
    return ["-ca", str(pki.ca_file), "-cert", str(cert), "-key", str(key)]


async def test_go_client_runs_a_command_and_gets_stdout_and_stderr(spdyclient, kubelet, apiserver_identity):
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["sh", "-c", "echo out; echo err >&2"]), *apiserver_identity
    )
    assert (code, out) == (0, b"out\n"), err
    assert err == b"err\n"


async def test_go_client_pipes_stdin_and_sees_its_eof(spdyclient, kubelet, apiserver_identity):
    data = os.urandom(300_000)
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["cat"], stdin=True), "-stdin", *apiserver_identity, stdin=data
    )
    assert code == 0, err
    assert out == data


async def test_go_client_gets_the_exit_code_on_v4_and_v5(spdyclient, kubelet, apiserver_identity):
    for protocols in ("v5.channel.k8s.io", "v4.channel.k8s.io"):
        code, _, err = await run_client(
            spdyclient, exec_url(kubelet, ["sh", "-c", "exit 3"]), "-protocols", protocols, *apiserver_identity
        )
        assert code == 3, err
        assert b"exit code 3" in err or b"exit status 3" in err


async def test_older_protocols_report_failure_as_text(spdyclient, kubelet, apiserver_identity):
    for protocols in ("v3.channel.k8s.io", "v2.channel.k8s.io"):
        code, out, err = await run_client(
            spdyclient, exec_url(kubelet, ["sh", "-c", "echo hi; exit 3"]), "-protocols", protocols,
            *apiserver_identity,
        )
        assert out == b"hi\n"
        assert code == 125 and b"exit status 3" in err, err
        code, out, err = await run_client(
            spdyclient, exec_url(kubelet, ["echo", "fine"]), "-protocols", protocols, *apiserver_identity
        )
        assert (code, out) == (0, b"fine\n"), err


async def test_tty_merges_output_and_applies_the_resize(spdyclient, kubelet, apiserver_identity):
    code, out, err = await run_client(
        spdyclient,
        exec_url(kubelet, ["sh", "-c", "sleep 0.5; stty size; echo to-stderr >&2"], tty=True),
        "-tty", "-cols", "123", "-rows", "45", *apiserver_identity,
    )
    assert code == 0, err
    assert b"45 123" in out
    assert b"to-stderr" in out  # on a tty, stderr is the terminal too


async def test_ten_megabytes_of_output_arrive_intact(spdyclient, kubelet, apiserver_identity, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10 * 1024 * 1024))
    code, out, err = await run_client(spdyclient, exec_url(kubelet, ["cat", str(blob)]), *apiserver_identity)
    assert code == 0, err
    assert out == blob.read_bytes()


async def test_plugin_without_exec_gets_a_clear_error_not_a_hang(spdyclient, kubelet, apiserver_identity, monkeypatch):
    monkeypatch.setattr(kubelet, "_execs", NoExec())
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["true"]), *apiserver_identity, timeout=60)
    assert code == 125
    assert b"exec not supported by this plugin" in err


async def test_attach_without_backend_support_reports_it(spdyclient, kubelet, apiserver_identity):
    url = f"https://127.0.0.1:{kubelet.port}/attach/ns1/pod1/main?output=1&error=1"
    code, _, err = await run_client(spdyclient, url, *apiserver_identity, timeout=60)
    assert code == 125
    assert b"attach not supported by this plugin" in err


async def test_unknown_pod_and_container_are_refused_before_upgrading(spdyclient, kubelet, apiserver_identity):
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["true"], pod="nope"), *apiserver_identity)
    assert code == 125 and b"pod ns1/nope not found" in err
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["true"], container="ghost"), *apiserver_identity)
    assert code == 125 and b"ghost" in err


async def test_unsupported_protocols_are_refused_with_403(spdyclient, kubelet, apiserver_identity):
    code, _, err = await run_client(
        spdyclient, exec_url(kubelet, ["true"]), "-protocols", "v9.channel.k8s.io", *apiserver_identity
    )
    assert code == 125
    assert b"unable to negotiate protocol" in err


async def test_token_callers_are_authorized_per_verb(spdyclient, kubelet, pki, reviews):
    ca = ["-ca", str(pki.ca_file)]
    code, out, err = await run_client(spdyclient, exec_url(kubelet, ["echo", "ok"]), "-token", "good-token", *ca)
    assert (code, out) == (0, b"ok\n"), err
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["echo", "ok"]), "-token", "bad-token", *ca)
    assert code == 125 and b"Unauthorized" in err
    reviews.grants["alice"] = set()
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["echo", "ok"]), "-token", "good-token", *ca)
    # alice's earlier "allowed" is cached for 5 minutes, like the kubelet; a new user is not.
    assert code == 0, err
    reviews.tokens["bob-token"] = UserInfo("bob")
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["echo", "ok"]), "-token", "bob-token", *ca)
    assert code == 125
    assert b"Forbidden (user=bob, verb=create, resource=nodes, subresource=proxy)" in err


async def test_anonymous_callers_are_rejected(spdyclient, kubelet, pki):
    code, _, err = await run_client(spdyclient, exec_url(kubelet, ["true"]), "-ca", str(pki.ca_file))
    assert code == 125
    assert b"Unauthorized" in err


async def test_client_certificates_from_another_ca_fail_the_handshake(spdyclient, kubelet, pki, tmp_path, backend):
    other = trustme.CA()
    leaf = other.issue_cert(common_name="apiserver", organization_name="system:masters")
    cert, key = tmp_path / "evil.pem", tmp_path / "evil.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    code, _, err = await run_client(
        spdyclient, exec_url(kubelet, ["true"]), "-ca", str(pki.ca_file), "-cert", str(cert), "-key", str(key)
    )
    # With TLS 1.3 the client learns of the rejected certificate only when it reads its answer: as an
    # EOF, the server's alert, or a reset when the server closed with the request still unread.
    assert code == 125, err
    assert any(sign in err for sign in (b"EOF", b"certificate", b"connection reset by peer")), err
    assert backend.specs == []


@pytest.mark.slow
async def test_measure_spdy_stdout_throughput(spdyclient, kubelet, apiserver_identity, tmp_path, capsys):
    """Prints MB/s for 100 MB of stdout through TLS + SPDY to the Go client (no assertion on
    speed; the bytes are checked)."""
    size = 100 * 1024 * 1024
    start = time.perf_counter()
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["head", "-c", str(size), "/dev/zero"]), *apiserver_identity, timeout=600
    )
    elapsed = time.perf_counter() - start
    assert code == 0, err
    assert len(out) == size and out.count(0) == size
    with capsys.disabled():
        print(f"\nSPDY exec stdout throughput: {size / elapsed / 1e6:.1f} MB/s ({elapsed:.2f} s for 100 MiB)")


# ---- WebSocket (Kubernetes >= 1.36 direct mode), with client-go's WebSocket executor -------


@pytest.fixture
def ws_grants(reviews: InMemoryReviews) -> None:
    reviews.grants["alice"] = {("get", "proxy")}  # a WebSocket exec is a GET


async def test_websocket_v5_exec_with_stdin_eof_and_exit_code(spdyclient, kubelet, apiserver_identity):
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["sh", "-c", "cat; echo err >&2; exit 4"], stdin=True),
        "-websocket", "-protocols", "v5.channel.k8s.io", "-stdin", *apiserver_identity, stdin=b"via websocket\n",
    )
    assert code == 4, err
    assert out == b"via websocket\n"
    assert b"err\n" in err


async def test_websocket_v4_exec_reports_success(spdyclient, kubelet, apiserver_identity):
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["echo", "v4"]), "-websocket", "-protocols", "v4.channel.k8s.io",
        *apiserver_identity,
    )
    assert (code, out) == (0, b"v4\n"), err


async def test_websocket_tty_and_resize(spdyclient, kubelet, apiserver_identity):
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["sh", "-c", "sleep 0.5; stty size"], tty=True),
        "-websocket", "-protocols", "v5.channel.k8s.io", "-tty", "-cols", "99", "-rows", "33", *apiserver_identity,
    )
    assert code == 0, err
    assert b"33 99" in out


async def test_websocket_ten_megabytes_intact(spdyclient, kubelet, apiserver_identity, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10 * 1024 * 1024))
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["cat", str(blob)]), "-websocket", "-protocols", "v5.channel.k8s.io",
        *apiserver_identity,
    )
    assert code == 0, err
    assert out == blob.read_bytes()


async def test_websocket_exec_is_authorized_as_get(spdyclient, kubelet, pki, reviews, ws_grants):
    code, out, err = await run_client(
        spdyclient, exec_url(kubelet, ["echo", "ok"]), "-websocket", "-protocols", "v5.channel.k8s.io",
        "-token", "good-token", "-ca", str(pki.ca_file),
    )
    assert (code, out) == (0, b"ok\n"), err
    assert ("alice", "get", "nodes", "proxy", NODE) in reviews.sar_calls


async def test_websocket_plugin_without_exec_gets_a_clear_error(spdyclient, kubelet, apiserver_identity, monkeypatch):
    monkeypatch.setattr(kubelet, "_execs", NoExec())
    code, _, err = await run_client(
        spdyclient, exec_url(kubelet, ["true"]), "-websocket", "-protocols", "v5.channel.k8s.io",
        *apiserver_identity, timeout=60,
    )
    assert code == 125
    assert b"exec not supported by this plugin" in err

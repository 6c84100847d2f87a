"""start_kubelet_endpoint without an apiserver: certificate mode from the settings, the bound port,
close(), options from the settings, and the supervisor of its background tasks."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from kubernetes_asyncio.client.configuration import Configuration

from vnode.kube.client import KubeClient
from vnode.kube.retry import Backoff, RetryPolicy
from vnode.kubelet import endpoint as endpoint_module
from vnode.kubelet.cert_manager import SELF_SIGNED_FILE, CertMode
from vnode.kubelet.endpoint import (
    EndpointOptions,
    default_cert_dir,
    start_kubelet_endpoint,
)
from vnode.settings import settings_from_mapping


class NoPods:
    def find(self, namespace: str, name: str) -> None:
        return None

    def list_pods(self) -> list[dict[str, object]]:
        return []


class NoPlugin:
    async def logs(self, request: object) -> object:
        raise AssertionError("not called")

    async def exec(self, request: object) -> object:
        raise AssertionError("not called")


def unreachable_apiserver() -> KubeClient:
    config = Configuration()
    config.host = "https://127.0.0.1:9"  # nothing listens: a call would fail loudly
    return KubeClient(config, retry=RetryPolicy(attempts=1))


async def healthz(port: int, ca: trustme.CA) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a self-signed serving certificate
    ca.issue_cert(common_name="probe").configure_cert(ctx)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


async def test_disable_csr_serves_a_self_signed_certificate_on_the_configured_address(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = settings_from_mapping(
        {"InterlinkURL": "unix:///tmp/none.sock", "KubeletPort": 0, "DisableCSR": True,
         "KubeletAddress": "127.0.0.1"}, nodename="edge-node", env={"POD_IP": "127.0.0.1"})
    kube = unreachable_apiserver()
    endpoint = await start_kubelet_endpoint(
        settings, kube, NoPods(), NoPlugin(),  # type: ignore[arg-type]
        EndpointOptions(cert_dir=tmp_path / "certs", client_ca_file=tmp_path / "ca.pem"))
    try:
        assert endpoint.mode is CertMode.SELF_SIGNED and endpoint.approver is None
        assert endpoint.port > 0
        assert (tmp_path / "certs" / SELF_SIGNED_FILE).exists()
        assert set(endpoint.tasks) == {"kubelet-certificates"}
        answer = await healthz(endpoint.port, ca)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    finally:
        await endpoint.close()
        await kube.close()
    assert all(task.done() for task in endpoint.tasks.values())
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", endpoint.port)


async def test_an_unreachable_apiserver_at_start_still_serves_and_keeps_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(endpoint_module, "SUPERVISOR_BACKOFF", Backoff(base=0.05, factor=1.0, cap=0.05))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = settings_from_mapping(
        {"InterlinkURL": "unix:///tmp/none.sock", "KubeletPort": 0, "KubeletAddress": "127.0.0.1"},
        nodename="edge-node", env={"POD_IP": "127.0.0.1"})
    kube = unreachable_apiserver()
    endpoint = await start_kubelet_endpoint(
        settings, kube, NoPods(), NoPlugin(),  # type: ignore[arg-type]
        EndpointOptions(approve_own_csr=True, cert_dir=tmp_path / "certs",
                        client_ca_file=tmp_path / "ca.pem"))
    try:
        assert endpoint.mode is CertMode.CSR and endpoint.certificates.source == "bootstrap"
        assert endpoint.approver is None  # who we are is not known yet
        assert (await healthz(endpoint.port, ca)).endswith(b"ok")
        async with asyncio.timeout(10):
            while caplog.text.count("csr-approver failed") < 2 or \
                    caplog.text.count("kubelet-certificates failed") < 2:
                await asyncio.sleep(0.02)
        assert not any(task.done() for task in endpoint.tasks.values())
    finally:
        await endpoint.close()
        await kube.close()


def test_options_come_from_the_kubelet_settings() -> None:
    settings = settings_from_mapping(
        {"InterlinkURL": "unix:///tmp/none.sock", "KubeletCSRAutoApprove": True,
         "KubeletCertDir": "/var/lib/vnode/pki"}, nodename="edge-node")
    options = EndpointOptions.from_settings(settings)
    assert options.approve_own_csr is True
    assert options.cert_dir == Path("/var/lib/vnode/pki")
    assert options.client_ca_file is None
    assert EndpointOptions.from_settings(settings_from_mapping(
        {"InterlinkURL": "unix:///tmp/none.sock"}, nodename="n")).approve_own_csr is False


def test_certificates_default_to_a_directory_per_node() -> None:
    assert default_cert_dir("a") != default_cert_dir("b")
    assert default_cert_dir("a").name == "a"


async def test_a_failing_background_task_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "SUPERVISOR_BACKOFF", Backoff(base=0.01, factor=1.0, cap=0.01))
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"failure {runs}")
        third.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(endpoint_module._supervised("flaky", flaky))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert runs == 3

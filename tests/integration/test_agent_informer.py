"""The list-watch informer against the real apiserver, through a TCP proxy the test can cut:
watches resume from the last resourceVersion after a dropped connection, and relist when that
resourceVersion is too old (410 Gone), without losing a change."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.agent_support import eventually, wait_default_service_account
from tests.conftest import Testbed
from vnode.kube.client import KubeClient
from vnode.kube.informer import ADDED, DELETED, Informer, InformerSettings
from vnode.kube.retry import Backoff


class CuttableProxy:
    """127.0.0.1:<port> → the apiserver. `cut()` aborts every connection and refuses new ones
    until `restore()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.connections.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
            self.connections.discard(writer)

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self.connections):
            writer.transport.abort()

    def restore(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def informer_via_proxy(testbed: Testbed, namespace: str) -> AsyncIterator[tuple[Informer, CuttableProxy, list[tuple[str, str]]]]:
    proxy = CuttableProxy(int(testbed.apiserver_url.rsplit(":", 1)[1]))
    await proxy.start()
    client = await KubeClient.connect(str(testbed.kubeconfig))
    client.host = f"https://127.0.0.1:{proxy.port}"  # the apiserver certificate names 127.0.0.1
    seen: list[tuple[str, str]] = []
    informer = Informer(client, f"/api/v1/namespaces/{namespace}/pods",
                        lambda etype, obj: seen.append((etype, obj["metadata"]["name"])),
                        settings=InformerSettings(backoff=Backoff(base=0.2, factor=2.0, cap=1.0)),
                        name="test-informer")
    task = asyncio.ensure_future(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 60)
        yield informer, proxy, seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await proxy.close()


def pod(name: str, namespace: str) -> dict[str, Any]:
    # A scheduler nobody runs: the pod stays Pending and unbound, untouched by anyone but us.
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}}


@pytest.fixture
async def ns(testbed: Testbed, namespace: str) -> str:
    await wait_default_service_account(testbed, namespace)
    return namespace


async def test_a_dropped_watch_resumes_from_the_last_resource_version_without_losing_events(
        testbed: Testbed, ns: str) -> None:
    async with informer_via_proxy(testbed, ns) as (informer, proxy, seen):
        await testbed.akubectl("create", "-f", "-", input=json.dumps(pod("before", ns)))
        await eventually(lambda: _has(seen, (ADDED, "before")), "ADDED before")
        watches_before = informer.watches

        proxy.cut()  # connection dropped; reconnects fail until restored
        await testbed.akubectl("create", "-f", "-", input=json.dumps(pod("during", ns)))
        await testbed.akubectl("delete", "pod", "before", "-n", ns, "--grace-period=0", "--force")
        await asyncio.sleep(1.0)  # a few failed reconnects
        proxy.restore()

        await eventually(lambda: _has(seen, (ADDED, "during")), "ADDED during (missed while cut)")
        await eventually(lambda: _has(seen, (DELETED, "before")), "DELETED before (missed while cut)")
        assert informer.watches > watches_before
        assert sum(informer.watch_restarts.values()) >= 1  # what vnode_watch_restarts_total shows
        assert informer.lists == 1  # resumed from the resourceVersion, no relist needed
        assert {o["metadata"]["name"] for o in informer.cache.values()} == {"during"}


async def test_a_too_old_resource_version_relists_and_reports_what_changed(
        testbed: Testbed, ns: str) -> None:
    async with informer_via_proxy(testbed, ns) as (informer, proxy, seen):
        await testbed.akubectl("create", "-f", "-", input=json.dumps(pod("old", ns)))
        await eventually(lambda: _has(seen, (ADDED, "old")), "ADDED old")

        proxy.cut()
        await testbed.akubectl("create", "-f", "-", input=json.dumps(pod("new", ns)))
        await testbed.akubectl("delete", "pod", "old", "-n", ns, "--grace-period=0", "--force")
        # As if the apiserver had compacted our resourceVersion while we were away.
        informer.resource_version = "1"
        proxy.restore()

        await eventually(lambda: _relisted(informer), "a relist after 410 Gone")
        await eventually(lambda: _has(seen, (ADDED, "new")), "ADDED new (from the relist)")
        await eventually(lambda: _has(seen, (DELETED, "old")), "DELETED old (from the relist diff)")
        assert {o["metadata"]["name"] for o in informer.cache.values()} == {"new"}
        assert informer.watch_restarts["expired"] == informer.relists_after_gone
        # and it keeps watching afterwards
        await testbed.akubectl("create", "-f", "-", input=json.dumps(pod("after", ns)))
        await eventually(lambda: _has(seen, (ADDED, "after")), "ADDED after (watch after relist)")


async def _has(seen: list[tuple[str, str]], event: tuple[str, str]) -> bool:
    return event in seen


async def _relisted(informer: Informer) -> bool:
    return informer.relists_after_gone >= 1

"""The apiserver client's own behaviour, against a local HTTP listener (not an apiserver: these
check what the client sends and when): the background lane and the per-resource request count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from vnode.kube.client import KubeClient, resource_of
from vnode.kube.kubeconfig import ApiAccess, StaticToken


@pytest.mark.parametrize(("path", "resource"), [
    ("/api/v1/namespaces/ns/pods/p/status", "pods/status"),
    ("/api/v1/namespaces/ns/pods/p", "pods"),
    ("/api/v1/namespaces/ns/events", "events"),
    ("/api/v1/namespaces/ns/serviceaccounts/default/token", "serviceaccounts/token"),
    ("/api/v1/pods?fieldSelector=spec.nodeName%3Dn", "pods"),
    ("/api/v1/nodes/n/status", "nodes/status"),
    ("/api/v1/namespaces/ns", "namespaces"),
    ("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n", "leases"),
])
def test_requests_are_counted_by_resource_and_subresource(path: str, resource: str) -> None:
    assert resource_of(path) == resource


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str], asyncio.Event]]:
    """Records `METHOD path` on arrival; /slow answers only once `release` is set."""
    seen: list[str] = []
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}" if request.query_string
                    else f"{request.method} {request.path}")
        if request.headers.get("Authorization"):
            seen.append(request.headers["Authorization"])
        if request.path.endswith("/slow"):
            await release.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen, release
    finally:
        await runner.cleanup()


async def _client(url: str) -> KubeClient:
    return KubeClient(ApiAccess(host=url))


async def test_background_requests_wait_until_no_foreground_request_is_in_flight(
        server: tuple[str, list[str], asyncio.Event]) -> None:
    url, seen, release = server
    kube = await _client(url)
    try:
        slow = asyncio.ensure_future(kube.get("/api/v1/namespaces/ns/pods/slow"))
        event = asyncio.ensure_future(kube.post("/api/v1/namespaces/ns/events", {}, background=True))
        await asyncio.sleep(0.3)
        assert seen == ["GET /api/v1/namespaces/ns/pods/slow"]  # the event waits
        assert await kube.get("/api/v1/namespaces/ns/pods/fast") == {"ok": True}  # foreground goes
        release.set()
        await asyncio.wait_for(asyncio.gather(slow, event), 10)
        assert seen[-1] == "POST /api/v1/namespaces/ns/events"
        assert kube.requests["POST events"] == 1 and kube.requests["GET pods"] == 2
    finally:
        await kube.close()


async def test_background_requests_go_at_once_when_the_client_is_idle(
        server: tuple[str, list[str], asyncio.Event]) -> None:
    url, seen, _ = server
    kube = await _client(url)
    try:
        await asyncio.wait_for(kube.post("/api/v1/namespaces/ns/events", {}, background=True), 5)
        assert seen == ["POST /api/v1/namespaces/ns/events"]
    finally:
        await kube.close()


async def test_query_values_and_the_bearer_token_reach_the_server_unchanged(
        server: tuple[str, list[str], asyncio.Event]) -> None:
    url, seen, _ = server
    kube = KubeClient(ApiAccess(host=url, token_source=StaticToken("t0ken")))
    try:
        await kube.get("/api/v1/pods", query=[("fieldSelector", "spec.nodeName=vn-1"),
                                              ("continue", "a+b/c=")])
        assert seen == ["GET /api/v1/pods?fieldSelector=spec.nodeName%3Dvn-1&continue=a%2Bb%2Fc%3D",
                        "Bearer t0ken"]
    finally:
        await kube.close()

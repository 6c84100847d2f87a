"""The plain-HTTP health port for the pod's probes."""

from __future__ import annotations

import aiohttp

from vnode.node.health_server import HealthServer
from vnode.settings import settings_from_mapping


async def test_healthz_is_ok_and_readyz_waits_for_the_agent() -> None:
    server = HealthServer("127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
            server.ready = True
            async with http.get(f"{base}/readyz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
    finally:
        await server.close()


async def test_extra_routes_share_the_port() -> None:
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="vnode_up 1\n")

    server = HealthServer("127.0.0.1", 0)
    server.add_get("/metrics", metrics)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
            assert await resp.text() == "vnode_up 1\n"
    finally:
        await server.close()


def test_health_port_is_off_by_default_and_configurable() -> None:
    base = {"InterlinkURL": "unix:///p.sock"}
    assert settings_from_mapping(base, nodename="n", env={}).health.port == 0
    s = settings_from_mapping({**base, "HealthPort": 10248, "HealthAddress": "0.0.0.0"},
                              nodename="n", env={})
    assert (s.health.port, s.health.address) == (10248, "0.0.0.0")
    assert not s.warnings

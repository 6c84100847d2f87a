"""A plain-HTTP health port for the pod's probes (the kubelet port needs authentication).

`GET /healthz` answers 200 `ok` whenever the event loop runs: it says the process is alive, on
purpose *not* whether the plugin is reachable (that is the Node's Ready condition; a probe tied to
the plugin would restart the agent, or cut an SSH tunnel's Service, for a backend outage).
`GET /readyz` answers 200 once the agent is serving (Node registered, pods listed), 503 before.
Other parts (metrics) add routes through `add_get` before `start`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HealthServer:
    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.ready = False
        self._app = web.Application()
        self._app.router.add_get("/healthz", self._healthz)
        self._app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None

    def add_get(self, path: str, handler: Handler) -> None:
        self._app.router.add_get(path, handler)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok")
        return web.Response(status=503, text="starting")

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port)
        await site.start()
        addresses = self._runner.addresses  # (host, port, ...) of every bound socket
        if addresses:
            self.port = int(addresses[0][1])
        log.info("health endpoint on http://%s:%d/healthz", self.address, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The apiserver adapter: the only place in vnode that opens connections to Kubernetes.

kubernetes_asyncio loads credentials (kubeconfig, in-cluster service account with token refresh,
client certificates, exec plugins) and provides the aiohttp transport. On top of it this module adds
what the agent needs and the generated API does not give:

* raw JSON in and out: pods reach the plugin exactly as the apiserver served them, including fields
  newer than the client's models, and patches are sent with the content type we choose;
* one client-side rate limiter for every request, and a background lane: requests marked
  `background` (events) go out only while no other request is in flight, so they never take the
  apiserver's time from a pod's create or status;
* a count of the requests sent, per verb and resource (for benchmarks and metrics);
* one retry policy for transient failures that honours Retry-After;
* errors classified once into `vnode.kube.errors` types;
* watch streams with an inactivity timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.configuration import Configuration
from kubernetes_asyncio.client.rest import RESTClientObject

from vnode import __version__
from vnode.kube.errors import Gone, KubeError, Transient, classify
from vnode.kube.ratelimit import TokenBucket
from vnode.kube.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

Query = Sequence[tuple[str, str]] | Mapping[str, str]

# A single watch event may carry a whole object; etcd's request limit is 1.5 MiB, so lines above
# 16 MiB can only be garbage and are refused rather than buffered forever.
MAX_WATCH_LINE = 16 * 1024 * 1024


class LineSplitter:
    """Splits a byte stream into newline-terminated lines (watch events are one JSON per line)."""

    def __init__(self, max_line: int = MAX_WATCH_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl]).strip()
            if line:
                lines.append(line)
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            raise ValueError(f"watch event longer than {self._max} bytes")
        return lines


def resource_of(path: str) -> str:
    """`pods/status`, `events`, `leases`...: the resource (and subresource) a request path names,
    for counting requests. `/api/v1/namespaces/ns/pods/p/status` → `pods/status`."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if len(parts) >= 3 and parts[0] == "namespaces":
        parts = parts[2:]
    if not parts:
        return ""
    return f"{parts[0]}/{parts[2]}" if len(parts) >= 3 else parts[0]


class KubeClient:
    """JSON requests to the apiserver with rate limiting, retries and typed errors."""

    def __init__(self, configuration: Configuration, *, qps: float = 200.0, burst: int = 400,
                 retry: RetryPolicy | None = None, request_timeout: float = 30.0,
                 max_connections: int = 100) -> None:
        self.configuration = configuration
        self.host = (configuration.host or "").rstrip("/")
        self.bucket = TokenBucket(qps, burst)
        self.retry = retry or RetryPolicy()
        # 30 s: an apiserver call that takes longer is stuck; mutating calls normally take < 1 s
        # (SIG-scalability SLO) and list/watch use their own timeouts.
        self.request_timeout = request_timeout
        configuration.connection_pool_maxsize = max_connections
        self._rest: RESTClientObject | None = None
        self.requests_sent = 0
        self.requests: Counter[str] = Counter()  # "PATCH pods/status" -> count
        # Foreground requests in flight (or waiting for a token); background ones wait for 0.
        self._foreground = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeClient:
        """Credentials from `kubeconfig`, else $KUBECONFIG, else the in-cluster service account."""
        cfg = Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG") or ""
        if path:
            await kube_config.load_kube_config(config_file=path, client_configuration=cfg,
                                               persist_config=False)
        else:
            kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return cls(cfg, **kwargs)

    def _session(self) -> RESTClientObject:
        if self._rest is None:
            self._rest = RESTClientObject(self.configuration)
        return self._rest

    async def close(self) -> None:
        if self._rest is not None:
            await self._rest.close()
            self._rest = None

    async def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": JSON, "Content-Type": content_type,
                   "User-Agent": f"vnode/{__version__}"}
        auth = await self.configuration.auth_settings()
        token = auth.get("BearerToken")
        if token and token.get("value"):
            headers["Authorization"] = str(token["value"])
        return headers

    async def request(self, method: str, path: str, *, query: Query | None = None,
                      body: Any = None, content_type: str = JSON,
                      timeout: float | None = None, retry: bool = True,
                      background: bool = False) -> Any:
        """Send one JSON request; retry transient failures per the policy; return decoded JSON.

        `background`: wait until no foreground request is in flight before each attempt (for
        writes nobody waits for, like events)."""
        attempt = 0
        if not background:
            self._foreground += 1
            self._quiet.clear()
        try:
            while True:
                if background:
                    await self._wait_quiet()
                try:
                    return await self._request_once(method, path, query=query, body=body,
                                                    content_type=content_type, timeout=timeout)
                except KubeError as err:
                    delay = self.retry.next_delay(err, attempt) if retry else None
                    if delay is None:
                        raise
                    log.debug("retrying %s %s in %.2fs after: %s", method, path, delay, err)
                    attempt += 1
                    await asyncio.sleep(delay)
        finally:
            if not background:
                self._foreground -= 1
                if self._foreground == 0:
                    self._quiet.set()

    async def _wait_quiet(self) -> None:
        while self._foreground:
            await self._quiet.wait()

    async def _request_once(self, method: str, path: str, *, query: Query | None, body: Any,
                            content_type: str, timeout: float | None) -> Any:
        await self.bucket.acquire()
        context = f"{method} {path}"
        headers = await self._headers(content_type)
        params = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        started = time.monotonic()
        self.requests_sent += 1
        self.requests[f"{method} {resource_of(path)}"] += 1
        try:
            resp = await self._session().request(
                method, self.host + path, query_params=cast(Any, params or None), headers=headers,
                body=body, _preload_content=False,
                _request_timeout=timeout or self.request_timeout)
            async with resp:
                data = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise Transient(f"{context}: {type(err).__name__}: {err}") from err
        log.debug("%s -> %d in %.3fs", context, status, time.monotonic() - started)
        decoded = _decode(data)
        if status >= 400:
            raise classify(status, decoded, context=context, retry_after=retry_after)
        return decoded

    async def watch(self, path: str, query: Query, *,
                    inactivity_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Yield the events of one watch request until the server ends it.

        Raises Gone when the requested resourceVersion is too old (HTTP 410 or an ERROR event
        with code 410), Transient when the connection drops or stays silent for
        `inactivity_timeout` seconds, and other KubeErrors for ERROR events.
        """
        await self.bucket.acquire()
        context = f"WATCH {path}"
        headers = await self._headers(JSON)
        params = list(query.items()) if isinstance(query, Mapping) else list(query)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout,
                                        sock_read=inactivity_timeout)
        self.requests_sent += 1
        self.requests[f"WATCH {resource_of(path)}"] += 1
        try:
            resp = await self._session().request(
                "GET", self.host + path, query_params=cast(Any, params), headers=headers,
                _preload_content=False, _request_timeout=timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise Transient(f"{context}: {type(err).__name__}: {err}") from err
        async with resp:
            if resp.status >= 400:
                data = await resp.read()
                raise classify(resp.status, _decode(data), context=context,
                               retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            splitter = LineSplitter()
            try:
                while True:
                    chunk = await resp.content.readany()
                    if not chunk:
                        return
                    for line in splitter.feed(chunk):
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            raise _watch_error(event.get("object"), context)
                        yield event
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
                raise Transient(f"{context}: {type(err).__name__}: {err}") from err

    # Convenience verbs -------------------------------------------------------------------

    async def get(self, path: str, *, query: Query | None = None) -> Any:
        return await self.request("GET", path, query=query)

    async def post(self, path: str, body: Any, *, query: Query | None = None,
                   background: bool = False) -> Any:
        return await self.request("POST", path, body=body, query=query, background=background)

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH,
                    background: bool = False) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type,
                                  background=background)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body=body)


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def _watch_error(obj: Any, context: str) -> KubeError:
    code = int(obj.get("code") or 0) if isinstance(obj, dict) else 0
    if code == 410 or (isinstance(obj, dict) and obj.get("reason") in ("Expired", "Gone")):
        return Gone(f"{context}: resourceVersion too old", status=410, body=obj)
    return classify(code or 500, obj, context=context)

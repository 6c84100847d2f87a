"""The apiserver adapter: the only place in vnode that opens connections to Kubernetes.

Credentials come from `vnode.kube.kubeconfig` (kubeconfig files, the in-cluster service account,
token refresh, exec plugins); requests go over one aiohttp session (keep-alive connections, pooled
up to `max_connections`). On top of that this module adds what the agent needs:

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
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from vnode import __version__
from vnode.kube.errors import Gone, KubeError, Transient, classify
from vnode.kube.kubeconfig import (
    ApiAccess,
    KubeconfigError,
    load_incluster,
    load_kubeconfig,
    ssl_context,
)
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

    def __init__(self, configuration: ApiAccess, *, qps: float = 200.0, burst: int = 400,
                 retry: RetryPolicy | None = None, request_timeout: float = 30.0,
                 max_connections: int = 100) -> None:
        # `configuration` may also be a kubernetes_asyncio Configuration (same attribute names;
        # some tests build one): its bearer token then comes from auth_settings().
        self.configuration = configuration
        self.host = (configuration.host or "").rstrip("/")
        self.bucket = TokenBucket(qps, burst)
        self.retry = retry or RetryPolicy()
        # 30 s: an apiserver call that takes longer is stuck; mutating calls normally take < 1 s
        # (SIG-scalability SLO) and list/watch use their own timeouts.
        self.request_timeout = request_timeout
        # 100 connections: one per request in flight (HTTP/1.1); more than the workers and the
        # status writes need at once, few enough for the apiserver's per-client fairness.
        self.max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None
        self.requests_sent = 0
        self.requests: Counter[str] = Counter()  # "PATCH pods/status" -> count
        # Foreground requests in flight (or waiting for a token); background ones wait for 0.
        self._foreground = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeClient:
        """Credentials from `kubeconfig`, else $KUBECONFIG, else the in-cluster service account.
        Raises KubeconfigError (naming the field) when they cannot be used."""
        path = kubeconfig or os.environ.get("KUBECONFIG") or ""
        access = load_kubeconfig(path) if path else load_incluster()
        return cls(access, **kwargs)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections,
                                             ssl=ssl_context(self.configuration) or True)
            # trust_env: HTTPS_PROXY/NO_PROXY apply, as in client-go. A 2 MiB read buffer: one
            # watch event may carry an object up to etcd's 1.5 MiB limit.
            self._http = aiohttp.ClientSession(connector=connector, trust_env=True,
                                               read_bufsize=2**21)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": JSON, "Content-Type": content_type,
                   "User-Agent": f"vnode/{__version__}"}
        try:
            token = await self._bearer_token()
        except (KubeconfigError, OSError) as err:
            # A credential plugin or token file failing now may work on the next try (a cloud
            # CLI's network, a token file being rotated): retried like an apiserver hiccup.
            raise Transient(f"getting a bearer token: {err}") from err
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _bearer_token(self) -> str | None:
        cfg: Any = self.configuration
        if hasattr(cfg, "bearer_token"):
            return cast(str | None, await cfg.bearer_token())
        auth = await cfg.auth_settings()  # a kubernetes_asyncio Configuration
        value = str((auth.get("BearerToken") or {}).get("value") or "")
        return value.removeprefix("Bearer ") or None

    def _url(self, path: str, query: Query | None) -> URL:
        params = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        # Encoded here, once, as client-go does: selectors and continue tokens reach the
        # apiserver byte for byte (aiohttp would otherwise re-quote them).
        text = self.host + path + ("?" + urlencode(params) if params else "")
        return URL(text, encoded=True)

    def _request_kwargs(self) -> dict[str, Any]:
        cfg: Any = self.configuration
        kwargs: dict[str, Any] = {}
        if getattr(cfg, "proxy", None):
            kwargs["proxy"] = cfg.proxy
        if getattr(cfg, "tls_server_name", None):
            kwargs["server_hostname"] = cfg.tls_server_name
        return kwargs

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
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        started = time.monotonic()
        self.requests_sent += 1
        self.requests[f"{method} {resource_of(path)}"] += 1
        try:
            async with self._session().request(
                    method, self._url(path, query), headers=headers, data=data,
                    timeout=aiohttp.ClientTimeout(total=timeout or self.request_timeout),
                    **self._request_kwargs()) as resp:
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
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout,
                                        sock_read=inactivity_timeout)
        self.requests_sent += 1
        self.requests[f"WATCH {resource_of(path)}"] += 1
        try:
            resp = await self._session().request("GET", self._url(path, query), headers=headers,
                                                 timeout=timeout, **self._request_kwargs())
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

"""Where the apiserver is and how to prove who we are: kubeconfig files (as kubectl reads them) and
the in-cluster service account.

vnode reads these itself instead of importing kubernetes_asyncio: that library's config loader
pulls in its whole generated client (every API and model class), ~36 MB of resident memory and half
a second of start-up for an agent that only sends raw JSON.

Supported, as client-go does it:
* `KUBECONFIG` may list several files (`a:b`); for each cluster/user/context name the first file
  that defines it wins, and so does the first `current-context`;
* cluster: `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`,
  `tls-server-name`, `proxy-url`; relative paths are relative to the file that names them;
* user: `client-certificate(-data)` + `client-key(-data)`, `token`, `tokenFile` (re-read every
  minute), `exec` credential plugins (`client.authentication.k8s.io/v1` and `v1beta1`, tokens;
  re-run when the credential expires);
* in-cluster: `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service-account token (re-read
  every minute: bound tokens rotate) and CA.
Not supported (refused with a message naming the field): `auth-provider` (removed from kubectl),
basic auth, exec plugins that return client certificates.

Embedded `*-data` values are written to private files once (TLS libraries and the kubelet
endpoint's client-CA option want paths).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# client-go re-reads token files after a minute: bound service-account tokens are rotated by the
# kubelet well before they expire, and a minute-old token is always still valid.
TOKEN_FILE_REFRESH = 60.0
# Re-run an exec plugin this long before its credential expires, so no request carries a token
# that expires in flight.
EXEC_EXPIRY_MARGIN = 10.0
# An exec plugin that prints nothing for this long is stuck (cloud CLIs answer within seconds).
EXEC_TIMEOUT = 60.0


class KubeconfigError(Exception):
    """The kubeconfig (or in-cluster environment) cannot be used; the message names the field."""


class TokenSource(Protocol):
    async def token(self) -> str: ...


@dataclass
class StaticToken:
    value: str

    async def token(self) -> str:
        return self.value


@dataclass
class FileToken:
    """A token read from a file, re-read every TOKEN_FILE_REFRESH seconds."""

    path: Path
    _value: str = ""
    _read_at: float = float("-inf")

    async def token(self) -> str:
        now = time.monotonic()
        if now - self._read_at >= TOKEN_FILE_REFRESH:
            # A small local file, once a minute; in a thread anyway so the loop never blocks.
            text = await asyncio.to_thread(self.path.read_text)
            self._value, self._read_at = text.strip(), now
        return self._value


@dataclass
class ExecToken:
    """A client-go exec credential plugin: runs `command`, reads an ExecCredential on stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "client.authentication.k8s.io/v1"
    _value: str = ""
    _expires: float = float("-inf")  # monotonic; inf when the credential does not say
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def token(self) -> str:
        async with self._lock:  # concurrent requests wait for one run of the plugin
            if not self._value or time.monotonic() >= self._expires:
                await self._run()
            return self._value

    async def _run(self) -> None:
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise KubeconfigError(f"users[].user.exec: running {self.command}: {error}") from None
        if proc.returncode != 0:
            raise KubeconfigError(f"users[].user.exec: {self.command} exited with {proc.returncode}: "
                                  f"{err.decode(errors='replace').strip()[-500:]}")
        self._value, self._expires = parse_exec_credential(out)


def parse_exec_credential(out: bytes) -> tuple[str, float]:
    """The token and its monotonic expiry (inf if none) from an ExecCredential. Pure."""
    try:
        status = json.loads(out)["status"]
    except (ValueError, KeyError, TypeError):
        raise KubeconfigError("users[].user.exec: the plugin did not print an ExecCredential "
                              "with a status") from None
    if not isinstance(status, dict):
        raise KubeconfigError("users[].user.exec: ExecCredential status is not an object")
    token = status.get("token")
    if not isinstance(token, str) or not token:
        if status.get("clientCertificateData"):
            raise KubeconfigError("users[].user.exec: exec plugins that return client certificates "
                                  "are not supported; use one that returns a token")
        raise KubeconfigError("users[].user.exec: ExecCredential status has no token")
    expiry = status.get("expirationTimestamp")
    if not expiry:
        return token, float("inf")
    try:
        moment = datetime.fromisoformat(str(expiry))  # 3.11 reads the trailing Z
    except ValueError:
        raise KubeconfigError(f"users[].user.exec: expirationTimestamp {expiry!r} is not a time") from None
    return token, time.monotonic() + moment.timestamp() - time.time() - EXEC_EXPIRY_MARGIN


@dataclass
class ApiAccess:
    """How to reach one apiserver. Attribute names follow kubernetes_asyncio's Configuration,
    which other code (and tests) may still pass where an ApiAccess is expected."""

    host: str
    ssl_ca_cert: str | None = None  # CA bundle file ("" / None: the system's trust store)
    cert_file: str | None = None
    key_file: str | None = None
    verify_ssl: bool = True
    tls_server_name: str | None = None
    proxy: str | None = None
    token_source: TokenSource | None = None
    namespace: str = ""

    async def bearer_token(self) -> str | None:
        return await self.token_source.token() if self.token_source is not None else None


def ssl_context(access: Any) -> ssl.SSLContext | None:
    """The TLS context for `access` (an ApiAccess or anything with the same attributes), or None
    for plain http."""
    if not str(access.host).startswith("https://"):
        return None
    ctx = ssl.create_default_context(cafile=access.ssl_ca_cert or None)
    if access.cert_file:
        ctx.load_cert_chain(access.cert_file, keyfile=access.key_file or None)
    if not access.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- kubeconfig files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Named:
    body: Mapping[str, Any]
    base: Path  # directory of the file that defined it


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise KubeconfigError(f"kubeconfig {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise KubeconfigError(f"kubeconfig {path}: not YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise KubeconfigError(f"kubeconfig {path}: the top level is not a mapping")
    return data


def _merge(paths: Sequence[Path]) -> tuple[str, dict[str, dict[str, _Named]]]:
    current = ""
    named: dict[str, dict[str, _Named]] = {"clusters": {}, "users": {}, "contexts": {}}
    for path in paths:
        data = _read(path)
        current = current or str(data.get("current-context") or "")
        single = {"clusters": "cluster", "users": "user", "contexts": "context"}
        for section, key in single.items():
            for item in data.get(section) or []:
                if isinstance(item, Mapping) and item.get("name") and isinstance(item.get(key), Mapping):
                    named[section].setdefault(str(item["name"]), _Named(item[key], path.parent))
    return current, named


class _Materialised:
    """Private files for embedded certificate data, removed at exit."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def write(self, what: str, data: str) -> str:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"{what}: not base64") from None
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vnode-kube-"))  # mode 0700
            atexit.register(shutil.rmtree, self._dir, True)
        fd, name = tempfile.mkstemp(dir=self._dir)  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        return name


_files = _Materialised()


def _path_or_data(item: _Named, key: str, what: str) -> str | None:
    data = item.body.get(f"{key}-data")
    if data:
        return _files.write(f"{what}.{key}-data", str(data))
    value = item.body.get(key)
    if value:
        path = Path(str(value)).expanduser()
        path = path if path.is_absolute() else item.base / path
        if not path.exists():
            raise KubeconfigError(f"{what}.{key}: file {path} does not exist")
        return str(path)
    return None


def _user_token(user: _Named, name: str) -> TokenSource | None:
    what = f"users[{name}].user"
    body = user.body
    refused = {"auth-provider": "auth-provider plugins were removed from kubectl; use an exec "
                                "credential plugin",
               "username": "basic authentication was removed from Kubernetes"}
    for unsupported, why in refused.items():
        if body.get(unsupported):
            raise KubeconfigError(f"{what}.{unsupported}: {why}")
    if body.get("token"):
        return StaticToken(str(body["token"]))
    if body.get("tokenFile"):
        path = Path(str(body["tokenFile"])).expanduser()
        return FileToken(path if path.is_absolute() else user.base / path)
    exec_ = body.get("exec")
    if exec_:
        if not isinstance(exec_, Mapping) or not exec_.get("command"):
            raise KubeconfigError(f"{what}.exec.command: missing")
        env = {str(e["name"]): str(e.get("value", "")) for e in exec_.get("env") or []
               if isinstance(e, Mapping) and e.get("name")}
        command = str(exec_["command"])
        if "/" in command and not Path(command).is_absolute():
            command = str(user.base / command)  # client-go: relative to the kubeconfig
        return ExecToken(command=command, args=tuple(str(a) for a in exec_.get("args") or ()),
                         env=env, api_version=str(exec_.get("apiVersion") or "client.authentication.k8s.io/v1"))
    return None


def load_kubeconfig(paths: str | Sequence[str], context: str = "") -> ApiAccess:
    """ApiAccess from kubeconfig file(s): a `KUBECONFIG`-style list or a sequence of paths."""
    files = [Path(p).expanduser() for p in (paths.split(os.pathsep) if isinstance(paths, str) else paths) if p]
    if not files:
        raise KubeconfigError("kubeconfig: no file given")
    current, named = _merge(files)
    context = context or current
    if not context:
        raise KubeconfigError("kubeconfig current-context: not set")
    ctx = named["contexts"].get(context)
    if ctx is None:
        raise KubeconfigError(f"kubeconfig current-context: context {context!r} is not defined")
    cluster_name, user_name = str(ctx.body.get("cluster") or ""), str(ctx.body.get("user") or "")
    cluster = named["clusters"].get(cluster_name)
    if cluster is None:
        raise KubeconfigError(f"contexts[{context}].context.cluster: cluster {cluster_name!r} is not defined")
    server = str(cluster.body.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"clusters[{cluster_name}].cluster.server: {server!r} is not an http(s) URL")
    what = f"clusters[{cluster_name}].cluster"
    access = ApiAccess(
        host=server, ssl_ca_cert=_path_or_data(cluster, "certificate-authority", what),
        verify_ssl=not cluster.body.get("insecure-skip-tls-verify"),
        tls_server_name=str(cluster.body.get("tls-server-name") or "") or None,
        proxy=str(cluster.body.get("proxy-url") or "") or None,
        namespace=str(ctx.body.get("namespace") or ""))
    if user_name:
        user = named["users"].get(user_name)
        if user is None:
            raise KubeconfigError(f"contexts[{context}].context.user: user {user_name!r} is not defined")
        uwhat = f"users[{user_name}].user"
        access.cert_file = _path_or_data(user, "client-certificate", uwhat)
        access.key_file = _path_or_data(user, "client-key", uwhat)
        if bool(access.cert_file) != bool(access.key_file):
            raise KubeconfigError(f"{uwhat}: client-certificate and client-key must be given together")
        access.token_source = _user_token(user, user_name)
    return access


def load_incluster(env: Mapping[str, str] | None = None,
                   account_dir: Path = SERVICE_ACCOUNT_DIR) -> ApiAccess:
    """ApiAccess from the pod's service account (what client-go's InClusterConfig reads)."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError("no kubeconfig (KUBECONFIG or --kubeconfig) and not in a cluster "
                              "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset)")
    token = account_dir / "token"
    if not token.exists():
        raise KubeconfigError(f"in-cluster: service account token {token} does not exist "
                              "(automountServiceAccountToken off?)")
    if ":" in host:
        host = f"[{host}]"  # IPv6
    ca = account_dir / "ca.crt"
    namespace = account_dir / "namespace"
    return ApiAccess(host=f"https://{host}:{port}", ssl_ca_cert=str(ca) if ca.exists() else None,
                     token_source=FileToken(token),
                     namespace=namespace.read_text().strip() if namespace.exists() else "")

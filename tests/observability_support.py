"""metrics-server on the testbed, as a local process behind the apiserver's aggregation layer.

The testbed has no pod network and no kube-proxy, so metrics-server cannot run as a pod behind a
ClusterIP. What works instead (see hack/metrics-server/README.md):

* the APIService `v1beta1.metrics.k8s.io` names a Service of type **ExternalName** (`localhost`): the
  aggregator resolves an ExternalName service to `https://<externalName>:<APIService port>`
  (k8s.io/apiserver pkg/util/proxy ResolveCluster), so it dials metrics-server on loopback. A
  selector-less Service with a manual EndpointSlice would need a non-loopback address: Endpoints
  validation rejects 127.0.0.0/8;
* metrics-server serves a certificate for `<service>.<namespace>.svc` (the name the aggregator
  verifies) from a throwaway CA that is the APIService's caBundle;
* it authenticates as its own ServiceAccount (token in a kubeconfig) with the RBAC of its upstream
  manifests, uses the same token towards kubelets (the node agent checks it with TokenReview and a
  `nodes/metrics` SubjectAccessReview), and verifies kubelet serving certificates against the cluster
  CA (`--kubelet-certificate-authority`), with InternalIP and the node's status port;
* `--node-selector` keeps it to the test's nodes (other tests register nodes that serve nothing).

The APIService is cluster-wide: one metrics-server at a time per testbed. It is deleted at stop, so
an idle testbed does not advertise an unavailable metrics.k8s.io to every kubectl.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
HACK = REPO / "hack" / "metrics-server"
BUILD = HACK / "build"


def _load(name: str) -> ModuleType:
    """hack/metrics-server's modules (not a package: the scripts put their directory on sys.path)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HACK / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


msrun = _load("msrun")
APISERVICE = msrun.APISERVICE


def build_metrics_server() -> Path:
    """hack/metrics-server/build (cached after the first build); raises with its output on failure."""
    proc = subprocess.run([sys.executable, str(BUILD)], capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/metrics-server/build failed: {proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class MetricsServer:
    testbed: object
    workdir: Path
    node_selector: str
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    args: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.workdir / "metrics-server.log"

    async def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return await self.testbed.akubectl(*args, input=input, check=check)  # type: ignore[attr-defined]

    async def start(self) -> None:
        binary = await asyncio.to_thread(build_metrics_server)  # minutes when cold, on purpose off the loop
        self.port = msrun.free_port()
        ca_pem, cert, key = msrun.serving_pair(self.workdir)
        await self.kubectl("apply", "-f", "-", input=msrun.as_list(msrun.rbac_manifests()))
        token = (await self.kubectl("-n", msrun.NAMESPACE, "create", "token", msrun.NAME, "--duration=2h")).stdout.strip()
        config = self.workdir / "metrics-server.kubeconfig"
        cluster_ca = Path(self.testbed.ca_cert)  # type: ignore[attr-defined]
        config.write_text(msrun.kubeconfig(self.testbed.apiserver_url, cluster_ca.read_bytes(), token))  # type: ignore[attr-defined]
        self.args = msrun.argv(binary, self.port, cert, key, config, cluster_ca, self.node_selector)
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=log_fd, stderr=asyncio.subprocess.STDOUT,
                                                             stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(log_fd)
        await self.kubectl("apply", "-f", "-", input=msrun.as_list(msrun.service_manifests(self.port, ca_pem)))
        await self.wait_available()

    async def wait_available(self, timeout: float = 120.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        last = ""
        while asyncio.get_running_loop().time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"metrics-server exited {self.proc.returncode}: {self.tail()}")
            out = await self.kubectl("get", "apiservice", APISERVICE, "-o", "json", check=False)
            if out.returncode == 0:
                conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
                available: dict[str, str] = next((c for c in conditions if c.get("type") == "Available"), {})
                if available.get("status") == "True":
                    return
                last = f"{available.get('reason')}: {available.get('message')}"
            await asyncio.sleep(1.0)
        raise RuntimeError(f"APIService {APISERVICE} not Available after {timeout:g}s ({last}); log: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        await self.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false", check=False)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None

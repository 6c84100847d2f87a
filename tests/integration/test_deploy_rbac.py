"""The chart's ServiceAccount, RBAC and ConfigMap, applied for real to the testbed apiserver, are all
the agent needs: the agent runs as a process exactly as the chart's Deployment would start it (its
args and env, the rendered config, a kubeconfig holding that ServiceAccount's token), with vnode's
SLURM plugin on the real SLURM behind it, and registers its node, runs the example pods of
deploy/examples/pods, serves `kubectl logs` and `kubectl exec` (with a serving certificate it
approved itself) and deletes pods, while anything outside the chart's RBAC is refused."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.agent_support import (
    cleanup_node,
    eventually,
    kget,
    short_socket_dir,
    wait_phase,
    wait_ready,
)
from tests.conftest import Testbed
from tests.deploy_support import (
    EXAMPLES,
    MY_VALUES,
    Proc,
    Rendered,
    free_port,
    kget_one,
    render,
    start_chart_agent,
    start_slurm_plugin,
)

pytestmark = pytest.mark.integration
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap")
# Fast loops for a test (vnode's own keys, passed through the chart's vnode.extraConfig).
FAST = {"PingPeriodSeconds": 1, "StatusPeriodSeconds": 0.5, "MissingReferenceRetrySeconds": 0.5}


@dataclass
class ChartAgent:
    node: str
    namespace: str
    rendered: Rendered
    sa_kubeconfig: Path
    agent: Proc
    plugin: Proc

    async def sa_kubectl(self, testbed: Testbed, *args: str) -> Any:
        """kubectl as the chart's ServiceAccount."""
        return await testbed.arun([testbed.kubectl, f"--kubeconfig={self.sa_kubeconfig}", *args], check=False)


def service_account_kubeconfig(testbed: Testbed, token: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "testbed", "cluster": {"server": testbed.apiserver_url,
                                                     "certificate-authority": str(testbed.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "testbed", "user": "sa"}}]}))
    path.chmod(0o600)
    return path


async def apply(testbed: Testbed, docs: list[dict[str, Any]], namespace: str | None = None) -> None:
    ns = ["-n", namespace] if namespace else []
    await testbed.akubectl("apply", *ns, "-f", "-", input=yaml.safe_dump_all(docs))


@pytest.fixture
async def chart_agent(testbed: Testbed, namespace: str, unique_name: Callable[[str], str],
                      tmp_path: Path) -> AsyncIterator[ChartAgent]:
    node = unique_name("vn-chart")
    sockets = short_socket_dir()
    values = {"nodeName": node, "plugin": {"socket": f"unix://{sockets}/plugin.sock"},
              "vnode": {"kubeletPort": free_port(), "healthPort": free_port(), "csrApprover": {"enabled": True},
                        "extraConfig": FAST}}
    rendered = render(MY_VALUES, values, namespace=namespace, tmp_dir=tmp_path)
    objects = [d for d in rendered.objects if d["kind"] in RBAC_KINDS]
    cluster_scoped = [d for d in objects if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    in_lease_ns = [d for d in objects if d["metadata"].get("namespace") == "kube-node-lease"]
    agent = plugin = None
    await apply(testbed, objects)
    try:
        token = (await testbed.akubectl("create", "token", node, "-n", namespace, "--duration=2h")).stdout.strip()
        kubeconfig = service_account_kubeconfig(testbed, token, tmp_path / "sa.kubeconfig")
        plugin = await start_slurm_plugin(testbed, tmp_path / "hpc", sockets / "plugin.sock")
        agent = await start_chart_agent(rendered, tmp_path, kubeconfig)
        yield ChartAgent(node, namespace, rendered, kubeconfig, agent, plugin)
    finally:
        for proc in (agent, plugin):
            if proc is not None:
                await proc.stop()
        await cleanup_node(testbed, node)
        for d in cluster_scoped + in_lease_ns:
            ns = ["-n", d["metadata"]["namespace"]] if d["metadata"].get("namespace") else []
            await testbed.akubectl("delete", d["kind"].lower(), d["metadata"]["name"], *ns, "--ignore-not-found",
                                   check=False)
        shutil.rmtree(sockets, ignore_errors=True)


def example_docs(name: str, node: str) -> list[dict[str, Any]]:
    """An example file's objects, its pods pointed at this test's node (the README's substitution)."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "pods" / name).read_text()) if d]
    for d in docs:
        if d["kind"] == "Pod":
            assert d["spec"]["nodeSelector"]["kubernetes.io/hostname"] == "vnode-demo"
            d["spec"]["nodeSelector"]["kubernetes.io/hostname"] = node
    return docs


async def wait_pod(testbed: Testbed, a: ChartAgent, pod: str, phase: str) -> None:
    """wait_phase, failing with the pod's status, events and the agent's log."""
    try:
        await wait_phase(testbed, a.namespace, pod, phase)
    except AssertionError as e:
        obj = await kget(testbed, "pod", pod, "-n", a.namespace)
        events = await kget(testbed, "events", "-n", a.namespace)
        seen = [f"{ev['reason']}: {ev['message']}" for ev in (events or {}).get("items", [])
                if ev["involvedObject"].get("name") == pod]
        output = await testbed.akubectl("logs", "-n", a.namespace, pod, check=False)
        raise AssertionError(f"{e}\nstatus: {json.dumps((obj or {}).get('status'))}\nevents: {seen}\n"
                             f"logs: {output.stdout}{output.stderr}\n"
                             f"agent log:\n{a.agent.log()}") from None


async def logs(testbed: Testbed, namespace: str, pod: str) -> str:
    done = await testbed.akubectl("logs", "-n", namespace, pod)
    return str(done.stdout)


async def test_the_charts_rbac_is_enough_to_run_the_example_pods_with_logs_and_exec(
        testbed: Testbed, chart_agent: ChartAgent) -> None:
    a, ns = chart_agent, chart_agent.namespace
    started = time.time()
    ready = await wait_ready(testbed, a.node)
    assert ready["status"] == "True", a.agent.log()
    node = await kget_one(testbed, "node", a.node)
    assert node["metadata"]["labels"]["site"] == "hpc-demo"  # my-values.yaml's nodeLabels
    assert (node["status"]["capacity"]["cpu"], node["status"]["capacity"]["memory"]) == ("8", "16Gi")
    assert await kget(testbed, "lease", a.node, "-n", "kube-node-lease") is not None

    await eventually(lambda: kget(testbed, "serviceaccount", "default", "-n", ns), "default ServiceAccount")
    for example in ("busybox-sleep.yaml", "slurm-job.yaml", "secret-env.yaml", "hostpath.yaml"):
        await apply(testbed, example_docs(example, a.node), ns)
    # a pod with a projected service-account token and a ConfigMap (TokenRequest + ConfigMap reads).
    # Mounted under /sa, not /var/run/secrets/...: the testbed's singularity stand-in (bwrap over the
    # host's /var) cannot create mount points below /var/run, which real apptainer can.
    await apply(testbed, [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greeting"}, "data": {"text": "hello"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "with-token"}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": a.node}, "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
            "containers": [{"name": "main", "image": "busybox", "command": ["/bin/sh", "-c",
                            "echo \"$(cat /cfg/text)\"; wc -c < /sa/token; grep -c 'BEGIN CERTIFICATE' /sa/ca.crt"],
                            "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "sa", "mountPath": "/sa"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "greeting"}},
                        {"name": "sa", "projected": {"sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]}}],
        ns)

    # exec and logs while the quickstart pod sleeps
    await wait_pod(testbed, a, "vnode-quickstart", "Running")
    exec_ = await testbed.akubectl("exec", "-n", ns, "vnode-quickstart", "-c", "my-container", "--",
                                   "echo", "exec through the chart's RBAC", check=False)
    assert exec_.returncode == 0, f"{exec_.stderr}\n{a.agent.log()}"
    assert exec_.stdout == "exec through the chart's RBAC\n"
    assert "started on" in await eventually(lambda: logs(testbed, ns, "vnode-quickstart"), "quickstart logs")

    for pod in ("vnode-slurm-job", "vnode-secret-env", "vnode-hostpath", "with-token", "vnode-quickstart"):
        await wait_pod(testbed, a, pod, "Succeeded")
    assert (await logs(testbed, ns, "vnode-quickstart")).endswith("FINISHED!\n")
    slurm_log = await logs(testbed, ns, "vnode-slurm-job")
    assert "pre-exec ran in job" in slurm_log, slurm_log
    job = (await kget_one(testbed, "pod", "vnode-slurm-job", "-n", ns))["metadata"]["annotations"]["JobID"]
    assert testbed.sacct_states([job])[job][0] == "COMPLETED"
    accounted = testbed.run([testbed.sacct, "-j", job, "-X", "-n", "--parsable2", "-o", "Partition,Timelimit,AllocCPUS"])
    assert accounted.stdout.strip() == "debug|00:10:00|2", accounted.stdout
    # (a plain `kubectl logs` shows the batch job's own lines first, like interLink's SLURM plugin)
    secret_log = await logs(testbed, ns, "vnode-secret-env")
    assert secret_log.endswith("\nuser=demo-user\ntoken=s3cr3t with spaces & $symbols\n"), repr(secret_log)
    assert "bytes to /scratch" in await logs(testbed, ns, "vnode-hostpath")
    # the hostPath is the HPC side's (the job's node): the file the container wrote is there
    assert Path("/tmp/vnode-demo-scratch/written-by-vnode").stat().st_mtime > started
    token_log = (await logs(testbed, ns, "with-token")).split()[-3:]
    assert token_log[0] == "hello" and int(token_log[1]) > 100 and int(token_log[2]) >= 1, token_log

    # deleting a pod: the agent removes the remote job and the API object (pods delete)
    await testbed.akubectl("delete", "pod", "-n", ns, "vnode-hostpath", "--wait=true", "--timeout=120s")
    # the agent's events (events create/patch)
    events = (await kget_one(testbed, "events", "-n", ns))["items"]
    submitted = {e["involvedObject"]["name"] for e in events
                 if e["reason"] == "Submitted" and e.get("source", {}).get("host") == a.node}
    assert {"vnode-quickstart", "vnode-slurm-job", "vnode-secret-env", "with-token"} <= submitted, submitted
    assert "orbidden" not in a.agent.log(tail=200_000), a.agent.log()


async def test_requests_outside_the_charts_rbac_are_denied(testbed: Testbed, chart_agent: ChartAgent,
                                                          unique_name: Callable[[str], str]) -> None:
    a = chart_agent
    await wait_ready(testbed, a.node)
    other = unique_name("not-mine")
    await testbed.akubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": other, "labels": {"vnode-test": "other"}}}))
    try:
        for argv in (["delete", "node", other], ["label", "node", other, "stolen=yes"],
                     ["delete", "node", a.node],
                     ["get", "secrets", "--all-namespaces"], ["get", "configmaps", "-n", "kube-system"],
                     ["create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", f"--user={other}"],
                     ["delete", "lease", "-n", "kube-node-lease", a.node]):
            done = await a.sa_kubectl(testbed, *argv)
            assert done.returncode != 0, f"`kubectl {' '.join(argv)}` as the agent's ServiceAccount succeeded"
            assert "forbidden" in done.stderr, done.stderr
        survivor = await kget(testbed, "node", other)
        assert survivor is not None and "stolen" not in survivor["metadata"]["labels"]
        # and what it is allowed to do on its own node, it can
        mine = await a.sa_kubectl(testbed, "get", "node", a.node, "-o", "name")
        assert mine.returncode == 0 and mine.stdout.strip() == f"node/{a.node}"
    finally:
        await testbed.akubectl("delete", "node", other, "--ignore-not-found", "--wait=false", check=False)


async def test_the_deployments_probes_answer_on_the_agents_health_port(testbed: Testbed,
                                                                       chart_agent: ChartAgent) -> None:
    vk = chart_agent.rendered.container("vk")
    ports = {p["name"]: p["containerPort"] for p in vk["ports"]}
    await wait_ready(testbed, chart_agent.node)
    async with aiohttp.ClientSession() as session:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = vk[probe]["httpGet"]
            url = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
            async with session.get(url) as response:
                assert response.status == 200, f"{probe} {url}: {response.status}"
    # the kubelet port is the other one the chart declares, and it wants authentication
    async with aiohttp.ClientSession() as session, \
            session.get(f"https://127.0.0.1:{ports['kubelet']}/pods", ssl=False) as response:
        assert response.status == 401

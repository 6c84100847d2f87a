"""`make demo` (hack/demo) end to end on the real testbed: the example pod is offloaded to SLURM, its
logs and an exec come back through kubectl, and the demo leaves none of its processes, jobs or
objects behind — when it succeeds, when a step fails, and after `--keep` + `hack/demo stop`.

Each run uses its own node name, namespace and state directory, so it shares the testbed with the
other tests (the testbed was running before, so the demo must leave it running)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Testbed

pytestmark = pytest.mark.integration
DEMO = REPO / "hack" / "demo"
DEMO_POD = REPO / "deploy" / "examples" / "pods" / "demo.yaml"
RUN_TIMEOUT = 900.0  # bounds a hang; a run against a running testbed takes well under a minute


@dataclass
class DemoRun:
    node: str
    namespace: str
    state_dir: Path
    testbed: Testbed

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, str(DEMO), "--state-dir", str(self.state_dir), "--nodename", self.node,
                "--namespace", self.namespace, *extra]

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run_argv(self.argv(*extra))

    def run_argv(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=self.testbed.env, timeout=RUN_TIMEOUT,
                              check=False, cwd=REPO)

    def processes(self) -> list[str]:
        """Every live process whose command line mentions this run's state directory: the agent, the
        plugin, and a SLURM job's scripts and containers (they run from the data root inside it)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(self.state_dir) in argv and "--state-dir" not in argv:  # not a hack/demo itself
                found.append(f"{entry.name}: {argv}")
        return found

    def node_exists(self) -> bool:
        done = self.testbed.kubectl_run("get", "node", self.node, "--ignore-not-found", "-o", "name")
        return bool(done.stdout.strip())


@pytest.fixture
def demo(testbed: Testbed, unique_name: Callable[[str], str]) -> Iterator[DemoRun]:
    state_dir = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))  # holds a unix socket: short path
    run = DemoRun(unique_name("demo"), unique_name("demo-ns"), state_dir, testbed)
    try:
        yield run
    finally:
        # A failed assertion must not leave a kept demo running for the rest of the session.
        run.run_argv([sys.executable, str(DEMO), "stop", "--state-dir", str(state_dir)])
        testbed.delete_namespace(run.namespace)
        shutil.rmtree(state_dir, ignore_errors=True)


def section(output: str, title: str) -> str:
    """The text a demo step printed: from its `==> [i/n] <title>` header to the next header."""
    match = re.search(rf"^==> \[\d+/\d+\] {re.escape(title)}\n(.*?)(?=^==> |\Z)", output, re.MULTILINE | re.DOTALL)
    assert match, f"no step {title!r} in the demo's output:\n{output}"
    return match.group(1)


def owned_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"^(plugin|agent) pid (\d+)", output, re.MULTILINE)}


def job_id(output: str) -> str:
    match = re.search(r"is Running as SLURM job (\d+)", output)
    assert match, output
    return match.group(1)


def assert_nothing_left(demo: DemoRun, output: str, pids: dict[str, int]) -> None:
    assert demo.processes() == [], output
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}/cmdline").exists() or str(demo.state_dir) not in Path(
            f"/proc/{pid}/cmdline").read_text(errors="replace"), f"the {name} (pid {pid}) is still running"
    assert not demo.node_exists(), f"node {demo.node} is still registered"
    ledger = demo.testbed.kubectl_run("get", "configmap", "-n", "kube-node-lease", "-l",
                                      f"vnode.dev/node={demo.node}", "-o", "name")
    assert ledger.stdout.strip() == ""


def test_the_demo_offloads_the_example_pod_to_slurm_shows_logs_and_exec_and_leaves_nothing_behind(
        demo: DemoRun, testbed: Testbed) -> None:
    done = demo.run()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out

    greeting = next(e["value"] for e in yaml.safe_load(DEMO_POD.read_text())["spec"]["containers"][0]["env"]
                    if e["name"] == "GREETING")
    logs = section(out, "kubectl logs")
    assert f"hello from pod hello-slurm in namespace {demo.namespace}\n" in logs
    assert f"an env value passed through unchanged: {greeting}\n" in logs  # quotes, $ and backticks intact
    assert "ready for kubectl exec\n" in logs

    exec_lines = section(out, "kubectl exec").splitlines()
    command = exec_lines.index(f"$ kubectl exec -n {demo.namespace} hello-slurm -c hello -- hostname")
    assert exec_lines[command + 1] == socket.gethostname()  # the stand-in runs on this host

    jid = job_id(out)
    shown = section(out, "What Kubernetes and SLURM see")
    assert re.search(rf"^{demo.node}\s+Ready\s", shown, re.MULTILINE), shown
    assert re.search(rf"^hello-slurm\s+1/1\s+Running\s.*\s{demo.node}\s", shown, re.MULTILINE), shown
    assert re.search(rf"^\s*{jid}\s+{testbed.slurm_partition}\s+\S+\s+\S+\s+RUNNING\s", shown, re.MULTILINE), shown

    cert = section(out, "The virtual node: Ready, with a CSR-issued kubelet certificate")
    assert f"CN=system:node:{demo.node}" in cert and "verified against the cluster CA" in cert
    assert "Approved,Issued" in cert

    end = section(out, "Stopping everything the demo started")
    assert "the testbed was running before the demo: left running" in end
    assert testbed.sacct_states([jid])[jid][0].startswith("CANCELLED")
    assert_nothing_left(demo, out, owned_pids(out))
    namespace = testbed.kubectl_run("get", "namespace", demo.namespace, "--ignore-not-found", "-o",
                                    "jsonpath={.metadata.deletionTimestamp}")
    assert namespace.stdout.strip() or not namespace.stdout, "the demo's namespace is not being deleted"


def test_a_failing_step_is_named_with_its_reason_and_everything_started_is_stopped(
        demo: DemoRun, testbed: Testbed) -> None:
    # The plugin refuses --wrap (it would replace the job script), so the pod fails at create and can
    # never be Running: the demo must stop at step 6 and pass the plugin's reason on.
    pod = yaml.safe_load(DEMO_POD.read_text())
    pod["metadata"]["annotations"]["slurm-job.vk.io/flags"] = "--wrap=true"
    bad_pod = demo.state_dir / "refused-pod.yaml"
    bad_pod.write_text(yaml.safe_dump(pod))

    done = demo.run("--pod", str(bad_pod))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    failure = re.search(r"^vnode demo FAILED at step 6/10 \(An example pod, offloaded to SLURM\): "
                        r"pod hello-slurm ended \(Failed\) before the demo could reach it: (.*)$", out, re.MULTILINE)
    assert failure, out
    assert "ProviderFailed" in failure.group(1) and "--wrap" in failure.group(1), out
    assert "==> Cleaning up after the failure" in out
    assert "==> [7/10]" not in out  # fail fast: nothing after the failed step
    assert_nothing_left(demo, out, owned_pids(out))


def test_keep_leaves_the_pod_reachable_until_demo_stop_removes_everything(
        demo: DemoRun, testbed: Testbed) -> None:
    kept = demo.run("--keep")
    out = kept.stdout + kept.stderr
    assert kept.returncode == 0, out
    assert "stop it all: hack/demo stop --state-dir" in out
    pids = owned_pids(out)
    assert set(pids) == {"agent", "plugin"} and all(Path(f"/proc/{p}").exists() for p in pids.values()), out

    # Still served after the demo exited: the agent and plugin outlive it.
    later = testbed.kubectl_run("exec", "-n", demo.namespace, "hello-slurm", "--", "sh", "-c", "echo still here")
    assert later.stdout == "still here\n"

    again = demo.run()
    assert again.returncode != 0 and "a demo is still running" in again.stderr, again.stdout + again.stderr

    stopped = demo.run_argv([sys.executable, str(DEMO), "stop", "--state-dir", str(demo.state_dir)])
    stop_out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 0, stop_out
    jid = job_id(out)
    assert testbed.sacct_states([jid])[jid][0].startswith("CANCELLED"), stop_out
    assert_nothing_left(demo, out + stop_out, pids)

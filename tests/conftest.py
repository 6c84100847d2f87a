"""Shared pytest machinery: the real testbed fixture, and checks every test gets for free.

* `testbed` (session): brings up hack/testbed (or reuses the running one) and returns a `Testbed`.
  If it cannot start, every test using it FAILS with the reason and the failing component's log tail.
* `testbed_136` (session): a second, kube-only control plane of Kubernetes 1.36 on shifted ports, next
  to the shared one (a `KubeTestbed`: no SLURM); stopped at the end by the session that started it.
* `namespace` (function): a fresh, uniquely named namespace, deleted (without waiting) afterwards.
* `unique_name` (function): a factory for DNS-1123 names unique to this test run.
* Tests under tests/integration/ (or using `testbed`) are marked `integration` automatically, and an
  integration test that skips is turned into a failure: integration tests never skip silently.
* Leak checks (autouse): a test that leaves asyncio tasks running, or child processes alive, fails.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTBED_CMD = REPO / "hack" / "testbed"  # run with this interpreter: it needs cryptography + pyyaml
# The testbed's own library (hack/testbedlib: stand-in parsers, PKI, build recipe) is test
# infrastructure, not part of the vnode package; its unit tests import it as `testbedlib`.
if str(REPO / "hack") not in sys.path:
    sys.path.insert(0, str(REPO / "hack"))
UP_TIMEOUT = 3600.0  # a cold `up` builds Kubernetes (~5 min here); leave room on a slow CI machine
KUBECTL_TIMEOUT = 120.0  # one kubectl call; the apiserver shares 2 cores with the test run
T = TypeVar("T")


class TestbedCommandError(AssertionError):
    """A command run through the testbed helpers failed; carries argv, exit code and output."""

    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv, self.returncode, self.stdout, self.stderr = argv, proc.returncode, proc.stdout, proc.stderr
        super().__init__(
            f"`{' '.join(argv)}` exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
        )


@dataclass(frozen=True)
class KubeTestbed:
    """A running control plane, as tests see it. Paths are absolute; `env` is a complete environment."""

    __test__ = False  # not a test class, despite the name

    k8s_version: str
    etcd_version: str | None
    apiserver_url: str  # https://127.0.0.1:6443 (the shared instance)
    kubeconfig: Path  # admin (O=system:masters)
    kubectl: Path
    bin_dir: Path  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
    pki_dir: Path
    ca_cert: Path
    ca_key: Path  # also the controller-manager's CSR signing key
    kubelet_client_cert: Path  # what the apiserver presents to kubelets (bound to system:kubelet-api-admin)
    kubelet_client_key: Path
    kubelet_client_user: str
    state_dir: Path
    log_dir: Path
    env: dict[str, str] = field(repr=False)  # os.environ + PATH (binaries[, stand-in]) + KUBECONFIG[ + SLURM_CONF]

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Self:
        paths = {
            "kubeconfig",
            "kubectl",
            "bin_dir",
            "pki_dir",
            "ca_cert",
            "ca_key",
            "kubelet_client_cert",
            "kubelet_client_key",
            "slurm_bin_dir",
            "slurm_conf",
            "singularity",
            "standin_dir",
            "state_dir",
            "log_dir",
        }
        kwargs: dict[str, Any] = {
            k: Path(info[k]) if k in paths else info[k] for k in cls.__dataclass_fields__ if k != "env"
        }
        return cls(**kwargs, env={**os.environ, **info["env"]})

    # --- running things -----------------------------------------------------------------------------
    def run(
        self,
        argv: list[str | Path],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with the testbed environment (blocking: use `arun` inside async tests)."""
        args = [str(a) for a in argv]
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**self.env, **(env or {})},
            check=False,
        )
        if check and proc.returncode != 0:
            raise TestbedCommandError(args, proc)
        return proc

    async def arun(
        self,
        argv: list[str | Path],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """`run` for async tests: never blocks the event loop the code under test shares."""
        args = [str(a) for a in argv]
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=self.env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
        except BaseException:  # timeout or cancellation: never leave the child behind
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        done = subprocess.CompletedProcess(
            args, proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and done.returncode != 0:
            raise TestbedCommandError(args, done)
        return done

    def kubectl_run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = KUBECTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl --kubeconfig=<admin> ARGS...`; raises TestbedCommandError on failure unless check=False."""
        return self.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], input=input, check=check, timeout=timeout
        )

    def kubectl_json(self, *args: str) -> Any:
        """`kubectl ARGS -o json`, parsed."""
        return json.loads(self.kubectl_run(*args, "-o", "json").stdout)

    async def akubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = KUBECTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return await self.arun(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], input=input, check=check, timeout=timeout
        )

    def apply(self, manifest: dict[str, Any] | str) -> None:
        """`kubectl apply -f -` of one object (dict) or YAML/JSON text."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl_run("apply", "-f", "-", input=text)

    def create_namespace(self, prefix: str = "t") -> str:
        name = unique(prefix)
        self.kubectl_run("create", "namespace", name)
        return name

    def delete_namespace(self, name: str) -> None:
        # --wait=false: pods bound to a node without a kubelet would keep the namespace terminating.
        self.kubectl_run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def wait_until(self, probe: Callable[[], T | None], what: str, timeout: float = 90.0, interval: float = 0.5) -> T:
        """Poll `probe` until it returns something truthy; fail naming `what`. Not a timing assertion:
        the timeout only bounds a hang, it is set far above any expected latency."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


@dataclass(frozen=True)
class Testbed(KubeTestbed):
    """The shared testbed: the control plane plus the SLURM cluster and the singularity stand-in."""

    __test__ = False

    slurm_bin_dir: Path  # sbatch, squeue, scancel, sinfo, sacct, scontrol, sstat
    slurm_conf: Path
    slurm_partition: str
    slurm_node: str
    singularity: Path  # the TEST SCAFFOLDING stand-in (also `apptainer` next to it)
    standin_dir: Path

    @property
    def sbatch(self) -> Path:
        return self.slurm_bin_dir / "sbatch"

    @property
    def squeue(self) -> Path:
        return self.slurm_bin_dir / "squeue"

    @property
    def scancel(self) -> Path:
        return self.slurm_bin_dir / "scancel"

    @property
    def sinfo(self) -> Path:
        return self.slurm_bin_dir / "sinfo"

    @property
    def sacct(self) -> Path:
        return self.slurm_bin_dir / "sacct"

    @property
    def scontrol(self) -> Path:
        return self.slurm_bin_dir / "scontrol"

    def submit_job(self, workdir: Path, *sbatch_args: str) -> str:
        """`sbatch --parsable` in `workdir` (output to <workdir>/<jobid>.out); returns the job id."""
        out = self.run([self.sbatch, "--parsable", f"--chdir={workdir}", f"--output={workdir}/%j.out", *sbatch_args])
        return out.stdout.strip().split(";")[0]

    def sacct_states(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """{job id: (State, ExitCode)} from plain `sacct -j` (through slurmdbd), allocation lines only."""
        out = self.run(
            [self.sacct, "-j", ",".join(job_ids), "--parsable2", "--noheader", "-X", "-o", "JobID,State,ExitCode"]
        )
        rows = [line.split("|") for line in out.stdout.splitlines() if line]
        return {job: (state, code) for job, state, code in rows}

    def wait_jobs_finished(self, job_ids: list[str], timeout: float = 240.0) -> dict[str, tuple[str, str]]:
        """Poll sacct until every job is in a terminal state; returns sacct_states()."""

        def finished() -> dict[str, tuple[str, str]] | None:
            states = self.sacct_states(job_ids)
            done = all(
                j in states and states[j][0] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") for j in job_ids
            )
            return states if done else None

        return self.wait_until(finished, f"SLURM jobs {job_ids} to finish (sacct)", timeout=timeout)


def unique(prefix: str = "t") -> str:
    """A DNS-1123 label unique to this process and call: `<prefix>-<random hex>`; any prefix is
    sanitised (test ids with brackets, underscores or capitals are fine)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "t"
    return f"{clean}-{secrets.token_hex(4)}"


# --- fixtures --------------------------------------------------------------------------------------


TB = TypeVar("TB", bound=KubeTestbed)


def _testbed_cmd(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TESTBED_CMD), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _start_testbed(
    kind: type[TB] = Testbed,  # type: ignore[assignment]
    env: dict[str, str] | None = None,
    up_args: tuple[str, ...] = (),
) -> TB:
    what = " ".join(["hack/testbed up", *up_args])
    try:
        up = _testbed_cmd(["up", *up_args], env, timeout=UP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"the testbed could not start: `{what}` did not finish: {e}", pytrace=False)
    if up.returncode != 0:
        pytest.fail(
            f"the testbed could not start (`{what}` exited {up.returncode}):\n{up.stderr[-6000:]}{up.stdout[-2000:]}",
            pytrace=False,
        )
    info = _testbed_cmd(["env", "--json"], env)
    if info.returncode != 0:
        pytest.fail(f"`hack/testbed env --json` failed:\n{info.stderr}", pytrace=False)
    return kind.from_info(json.loads(info.stdout))


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The real testbed (kube control plane + SLURM + singularity stand-in), started or reused.

    Left running after the session: other sessions and developers reuse it (`hack/testbed down` stops it)."""
    return _start_testbed(Testbed)


@pytest.fixture(scope="session")
def testbed_136() -> Iterator[KubeTestbed]:
    """A second, independent control plane of Kubernetes 1.36 (testbedlib.layout.K8S_136: its own
    state dir, PKI and CA, ports shifted by 100 — apiserver https://127.0.0.1:6543 — no SLURM),
    running next to the shared 1.35 one without touching it. Binaries are built on first use and
    cached like 1.35's (hack/setup prebuilds them).

    Few tests use it, so it does not idle on the shared cores: the session that started it
    stops it at the end, unless another live session still holds it; an instance that was already
    running (a developer's `hack/testbed up`) is left alone."""
    from testbedlib import holders
    from testbedlib.layout import K8S_136

    state = K8S_136.state
    env = {"K8S_VERSION": K8S_136.k8s_version, "VNODE_TESTBED_STATE": str(state)}
    with holders.guarded(state):
        if _testbed_cmd(["status"], env).returncode != 0:
            holders.mark_started_by_session(state)
        holders.hold(state)
    try:
        yield _start_testbed(KubeTestbed, env, ("--kube-only", "--port-offset", str(K8S_136.port_offset)))
    finally:
        with holders.guarded(state):
            if not holders.release(state) and holders.started_by_session(state):
                down = _testbed_cmd(["down"], env)
                if down.returncode != 0:  # a session cannot fail after its last test; say it loudly
                    print(f"testbed_136: `hack/testbed down` failed:\n{down.stderr}", file=sys.stderr)
                holders.clear_started_by_session(state)


@pytest.fixture
def namespace(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards without waiting."""
    name = testbed.create_namespace(request.node.name[:30])
    yield name
    testbed.delete_namespace(name)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """`unique_name("node")` → "node-1a2b3c4d"; use it for cluster-scoped objects (nodes, CSRs)."""
    return unique


# --- markers and the never-skip rule ----------------------------------------------------------------

INTEGRATION_DIR = REPO / "tests" / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        in_dir = INTEGRATION_DIR in Path(str(item.path)).parents
        if in_dir or {"testbed", "testbed_136"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.skipped and item.get_closest_marker("integration") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"integration tests must not skip (skip reason was: {reason})"
    return report


# --- leak checks ----------------------------------------------------------------------------------

LEAK_GRACE = 1.0  # seconds a finishing task/process gets before it counts as leaked
_children_key = pytest.StashKey[set[int]]()


def _live_children() -> set[int]:
    """Live (non-zombie) children of this pytest process, across all its threads."""
    kids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            kids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    alive = set()
    for pid in kids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            alive.add(pid)
    return alive


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    result = yield
    item.stash[_children_key] = _live_children()  # after fixtures: their processes are not the test's
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    before = item.stash.get(_children_key, None)
    if before is None:
        return result
    deadline = time.monotonic() + LEAK_GRACE
    leaked = _live_children() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _live_children() - before
    if leaked:
        described = {pid: _cmdline(pid) for pid in leaked}
        for pid in leaked:  # don't let one leaky test poison the rest of the session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"test left child processes running (killed now): {described}", pytrace=False)
    return result


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _loop_scope(item: pytest.Item) -> str:
    marker = item.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker else None
    if not scope:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pytest-asyncio without that option: tests get a loop of their own
            scope = None
    return scope or "function"


@pytest.fixture(autouse=True)
def _no_leaked_asyncio_tasks(request: pytest.FixtureRequest) -> None:
    """For coroutine tests on a per-test loop: fail if tasks are still running when the test is done."""
    fn = getattr(request.node, "function", None)
    if fn is not None and inspect.iscoroutinefunction(fn) and _loop_scope(request.node) == "function":
        request.getfixturevalue("_asyncio_task_leak_check")


@pytest.fixture
async def _asyncio_task_leak_check() -> AsyncIterator[None]:
    # Requested first (by the autouse fixture), so it is torn down last: after every other fixture of
    # the test, which is exactly when nothing the test started may still be running.
    yield
    me = asyncio.current_task()
    deadline = time.monotonic() + LEAK_GRACE
    while True:
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    if pending:
        names = sorted(f"{t.get_name()}: {getattr(t.get_coro(), '__qualname__', t.get_coro())}" for t in pending)
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=5)
        pytest.fail(f"test left {len(pending)} asyncio task(s) running (cancelled now): {names}", pytrace=False)

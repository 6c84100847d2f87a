"""The job script builder: golden files, hostile values, and job.sh actually executed under bash with a
fake container runtime that records the argv and the environment it would give the container.

The fake runtime (written per test) sources `--env-file` with `set -a` in a clean bash, which is how
singularity/apptainer read it (shell rules), then records {verb, image, args, env, pwd, binds}.
Commands it understands: `fake-echo WORDS...` (prints them), `fake-exit N`, `fake-touch PATH`,
`fake-wait-file PATH` (waits until PATH exists), `fake-sleep SECONDS`; anything else prints its argv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vnode.plugins.slurm.config import SlurmConfig, parse_config
from vnode.plugins.slurm.directives import build_directives
from vnode.plugins.slurm.podspec import PodSpecError, parse_pod
from vnode.plugins.slurm.script import JobFiles, build_job, split_mesh
from vnode.plugins.slurm.volumes import collect_volume_data, plan_volumes

GOLDEN = Path(__file__).parent / "golden" / "slurm"
UPDATE = os.environ.get("VNODE_UPDATE_GOLDEN") == "1"
BASH = shutil.which("bash") or "/bin/bash"

FAKE_RUNTIME = textwrap.dedent('''\
    #!{python}
    import json, os, subprocess, sys, time
    argv = sys.argv[1:]
    verb, i, env_file, pwd, binds = argv[0], 1, None, None, []
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("--env-file", "--pwd", "--bind", "-B"):
            if argv[i] == "--env-file":
                env_file = argv[i + 1]
            elif argv[i] == "--pwd":
                pwd = argv[i + 1]
            else:
                binds.append(argv[i + 1])
            i += 2
        else:
            i += 1
    image, args = argv[i], argv[i + 1:]
    env = {{}}
    if env_file:
        dump = "import json, os, sys; json.dump(dict(os.environ), sys.stdout)"
        script = 'set -a; . "$1" || exit 99; exec "$2" -c "$3"'
        base = json.loads(subprocess.run(["bash", "-c", script, "_", "/dev/null", sys.executable, dump], env={{}},
                                          capture_output=True, check=True).stdout)
        proc = subprocess.run(["bash", "-c", script, "_", env_file, sys.executable, dump], env={{}}, capture_output=True)
        if proc.returncode != 0:
            print("env file not readable by a shell:", proc.stderr.decode(), file=sys.stderr)
            sys.exit(98)
        full = json.loads(proc.stdout)
        env = {{k: v for k, v in full.items() if k not in base or base[k] != v}}
    with open(os.environ["FAKE_RUNTIME_LOG"], "a") as log:
        log.write(json.dumps({{"verb": verb, "image": image, "args": args, "env": env, "pwd": pwd, "binds": binds}}) + "\\n")
    if args[:1] == ["fake-echo"]:
        for word in args[1:]:
            print(word, flush=True)
    elif args[:1] == ["fake-exit"]:
        sys.exit(int(args[1]))
    elif args[:1] == ["fake-touch"]:
        open(args[1], "w").close()
    elif args[:1] == ["fake-wait-file"]:
        for _ in range(400):
            if os.path.exists(args[1]):
                break
            time.sleep(0.05)
        else:
            sys.exit(42)
    elif args[:1] == ["fake-sleep"]:
        time.sleep(float(args[1]))
    else:
        print(json.dumps(args))
    ''')


def write_fake_runtime(directory: Path) -> Path:
    path = directory / "fake-singularity"
    path.write_text(FAKE_RUNTIME.format(python=sys.executable))
    path.chmod(0o755)
    return path


def config_for(tmp: Path, extra: str = "", shared: bool = True) -> SlurmConfig:
    fake = write_fake_runtime(tmp)
    text = f"DataRootFolder: {tmp / 'jobs'}\nSingularityPath: {fake}\nImagePrefix: 'docker://'\n{extra}"
    config, _ = parse_config(text, {"SHARED_FS": "true" if shared else "false"})
    return config


def build(config: SlurmConfig, pod_json: dict[str, Any], containers: list[dict[str, Any]] | None = None) -> tuple[Any, JobFiles, Path]:
    pod = parse_pod(pod_json)
    pod_dir = config.pod_dir(pod.namespace, pod.uid)
    plan = plan_volumes(pod, collect_volume_data(containers or []))
    return pod, build_job(config, pod, str(pod_dir), build_directives(pod, config), plan), pod_dir


def materialize(job: JobFiles, pod_dir: Path) -> None:
    """What store.write_pod_dir does, enough for these tests."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    for d in job.dirs + job.empty_dirs:
        (pod_dir / d).mkdir(parents=True, exist_ok=True)
    (pod_dir / "job.sh").write_text(job.job_sh)
    (pod_dir / "job.slurm").write_text(job.job_slurm)
    for f in job.files:
        (pod_dir / f.path).parent.mkdir(parents=True, exist_ok=True)
        (pod_dir / f.path).write_bytes(f.content)
        (pod_dir / f.path).chmod(f.mode)


def run_job_sh(pod_dir: Path, log: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "FAKE_RUNTIME_LOG": str(log), **(env or {})}
    return subprocess.run([BASH, str(pod_dir / "job.sh")], env=full_env, capture_output=True, timeout=timeout, check=False)


def invocations(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def bash_n(text: str, tmp: Path, name: str) -> None:
    path = tmp / name
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def pod_json(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
             volumes: list[dict[str, Any]] | None = None, uid: str = "0a1b2c3d-0000-4000-8000-000000000001") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"name": "web", "namespace": "team-a", "uid": uid, "annotations": annotations or {}}, "spec": spec}


# --- golden files --------------------------------------------------------------------------------

GOLDEN_POD = pod_json(
    init=[{"name": "fetch", "image": "busybox", "command": ["sh", "-c", "echo x > /data/x"]}],
    containers=[
        {"name": "main", "image": "python:3.11", "command": ["python", "-c", "print('hi')"], "env": [{"name": "FOO", "value": "bar"}],
         "workingDir": "/work", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
         "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "data", "mountPath": "/data"}]},
        {"name": "side", "image": "/shared/images/side.sif", "args": ["--serve"], "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}]},
    ],
    annotations={"slurm-job.vk.io/flags": "-p gpu --time=01:00:00 --comment='nightly run'", "slurm-job.vk.io/pre-exec": "module load apptainer",
                 "slurm-job.vk.io/singularity-options": "--cleanenv", "interlink.eu/pod-ip": "10.0.0.7"},
    volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "data", "emptyDir": {}}],
)
GOLDEN_DATA = [{"name": "main", "configMaps": [{"metadata": {"name": "cfg"}, "data": {"a.conf": "x=1\n"}}]}]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-fs", "not-shared"])
def test_job_scripts_match_golden_files(shared: bool) -> None:
    config, _ = parse_config("DataRootFolder: /shared/il\nSingularityPath: apptainer\n", {"SHARED_FS": str(shared).lower()})
    _, job, _ = build(config, GOLDEN_POD, GOLDEN_DATA)
    suffix = "shared" if shared else "embedded"
    for name, text in ((f"job.slurm.{suffix}", job.job_slurm), (f"job.sh.{suffix}", job.job_sh)):
        path = GOLDEN / name
        if UPDATE:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert text == path.read_text(), f"{name} differs from the golden file (VNODE_UPDATE_GOLDEN=1 to accept)"


def test_scripts_pass_bash_n(tmp_path: Path) -> None:
    _, job, _ = build(config_for(tmp_path, shared=False), GOLDEN_POD, GOLDEN_DATA)
    bash_n(job.job_slurm, tmp_path, "job.slurm")
    bash_n(job.job_sh, tmp_path, "job.sh")


def test_job_slurm_starts_with_shebang_job_name_and_output(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    _, job, pod_dir = build(config, GOLDEN_POD, GOLDEN_DATA)
    first = job.job_slurm.splitlines()[:3]
    assert first == ["#!/bin/bash", "#SBATCH --job-name=0a1b2c3d-0000-4000-8000-000000000001", f"#SBATCH --output={pod_dir}/job.out"]


def test_sbatch_directives_all_come_before_the_first_command(tmp_path: Path) -> None:
    _, job, _ = build(config_for(tmp_path, shared=False), GOLDEN_POD, GOLDEN_DATA)
    lines = job.job_slurm.splitlines()[1:]
    first_other = next(i for i, line in enumerate(lines) if not line.startswith("#SBATCH"))
    assert all(not line.startswith("#SBATCH") for line in lines[first_other:])


# --- running job.sh --------------------------------------------------------------------------------


def test_init_then_parallel_containers_with_logs_statuses_and_times(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    flag = tmp_path / "b-started"
    pod = pod_json(
        init=[{"name": "i1", "image": "busybox", "command": ["fake-echo", "init one"]},
              {"name": "i2", "image": "busybox", "command": ["fake-echo", "init two"]}],
        containers=[{"name": "a", "image": "busybox", "command": ["fake-wait-file", str(flag)]},
                    {"name": "b", "image": "busybox", "command": ["fake-touch", str(flag)]}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log")
    assert proc.returncode == 0, proc.stderr  # a waited for b: they ran at the same time
    assert (pod_dir / "init-i1.out").read_text() == "init one\n"
    assert (pod_dir / "init-i2.out").read_text() == "init two\n"
    for base in ("init-i1", "init-i2", "run-a", "run-b"):
        assert (pod_dir / f"{base}.status").read_text() == "0\n"
        started = (pod_dir / f"{base}.started").read_text().strip()
        finished = (pod_dir / f"{base}.finished").read_text().strip()
        assert started.endswith("Z") and finished >= started
    order = [inv["args"][0] for inv in invocations(tmp_path / "log")]
    assert order[:2] == ["fake-echo", "fake-echo"]
    assert (pod_dir / "init-i1.ts").read_text().count("\n") == 1


def test_failing_init_container_stops_the_job_with_its_exit_code(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pod = pod_json(init=[{"name": "bad", "image": "busybox", "command": ["fake-exit", "7"]},
                         {"name": "never", "image": "busybox", "command": ["fake-echo", "x"]}],
                   containers=[{"name": "main", "image": "busybox", "command": ["fake-echo", "y"]}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log")
    assert proc.returncode == 7
    assert (pod_dir / "init-bad.status").read_text() == "7\n"
    assert not (pod_dir / "init-never.started").exists() and not (pod_dir / "run-main.started").exists()


def test_job_exit_code_is_the_first_non_zero_in_spec_order(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pod = pod_json(containers=[{"name": "ok", "image": "busybox", "command": ["fake-exit", "0"]},
                               {"name": "slow", "image": "busybox", "command": ["sh", "-c", "exit 3"], "args": []},
                               {"name": "fast", "image": "busybox", "command": ["fake-exit", "5"]}])
    pod["spec"]["containers"][1]["command"] = ["fake-exit", "3"]
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log")
    assert proc.returncode == 3
    assert [(pod_dir / f"run-{n}.status").read_text() for n in ("ok", "slow", "fast")] == ["0\n", "3\n", "5\n"]


def test_command_args_workdir_image_and_binds_reach_the_runtime(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pod = pod_json(containers=[{"name": "c", "image": "alpine:3", "command": ["fake-echo"], "args": ["a b", "--bind /:/host"],
                                "workingDir": "/work dir", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                   volumes=[{"name": "d", "emptyDir": {}}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    assert run_job_sh(pod_dir, tmp_path / "log").returncode == 0
    (inv,) = invocations(tmp_path / "log")
    assert inv["verb"] == "exec" and inv["image"] == "docker://alpine:3"
    assert inv["args"] == ["fake-echo", "a b", "--bind /:/host"]
    assert inv["pwd"] == "/work dir"
    assert inv["binds"] == [f"{pod_dir}/emptyDirs/d:/data"]
    assert (pod_dir / "run-c.out").read_text() == "a b\n--bind /:/host\n"


def test_container_without_command_uses_the_image_runscript(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "args": ["x"]}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    run_job_sh(pod_dir, tmp_path / "log")
    (inv,) = invocations(tmp_path / "log")
    assert inv["verb"] == "run" and inv["args"] == ["x"]


def test_sigterm_to_the_whole_job_records_every_status_before_exit(tmp_path: Path) -> None:
    """What scancel and the time limit do: SIGTERM to every process of the job."""
    config = config_for(tmp_path)
    pod = pod_json(containers=[{"name": "a", "image": "busybox", "command": ["fake-sleep", "60"]},
                               {"name": "b", "image": "busybox", "command": ["fake-sleep", "60"]}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    env = {**os.environ, "FAKE_RUNTIME_LOG": str(tmp_path / "log")}
    proc = subprocess.Popen(["bash", str(pod_dir / "job.sh")], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(invocations(tmp_path / "log")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (pod_dir / "run-a.status").read_text() == "143\n"
    assert (pod_dir / "run-b.status").read_text() == "143\n"


def test_host_path_checks_fail_the_job_with_a_message(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    missing = tmp_path / "no-such-dir"
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "command": ["fake-echo", "x"],
                                "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
                   volumes=[{"name": "h", "hostPath": {"path": str(missing), "type": "Directory"}}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log")
    assert proc.returncode == 1
    assert "is not a directory" in (pod_dir / "job.error").read_text()
    assert invocations(tmp_path / "log") == []


def test_host_path_or_create_types_create_on_the_node(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    d, f = tmp_path / "made" / "dir", tmp_path / "made2" / "file"
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "command": ["fake-echo", "x"],
                                "volumeMounts": [{"name": "d", "mountPath": "/d"}, {"name": "f", "mountPath": "/f"}]}],
                   volumes=[{"name": "d", "hostPath": {"path": str(d), "type": "DirectoryOrCreate"}},
                            {"name": "f", "hostPath": {"path": str(f), "type": "FileOrCreate"}}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    assert run_job_sh(pod_dir, tmp_path / "log").returncode == 0
    assert d.is_dir() and f.is_file()


def test_not_shared_job_slurm_writes_every_file_itself(tmp_path: Path) -> None:
    """The Go plugin lost these files without SHARED_FS; here job.slurm recreates them byte for byte."""
    config = config_for(tmp_path, shared=False)
    secret = {"metadata": {"name": "s"}, "data": {"k": "AAEC/w=="}}
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "command": ["fake-echo", "ok"], "env": [{"name": "X", "value": "it's"}],
                                "volumeMounts": [{"name": "s", "mountPath": "/s"}, {"name": "cfg", "mountPath": "/c"}]}],
                   volumes=[{"name": "s", "secret": {"secretName": "s"}}, {"name": "cfg", "configMap": {"name": "cfg"}}])
    data = [{"name": "c", "secrets": [secret], "configMaps": [{"metadata": {"name": "cfg"}, "data": {"x.conf": "line1\nline2\n"}}]}]
    _, job, pod_dir = build(config, pod, data)
    script = tmp_path / "job.slurm"
    script.write_text(job.job_slurm)
    env = {**os.environ, "FAKE_RUNTIME_LOG": str(tmp_path / "log")}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (pod_dir / "secrets/s/k").read_bytes() == b"\x00\x01\x02\xff"
    assert oct((pod_dir / "secrets/s/k").stat().st_mode & 0o777) == oct(0o600)
    assert (pod_dir / "configMaps/cfg/x.conf").read_text() == "line1\nline2\n"
    assert (pod_dir / "run-c.out").read_text() == "ok\n"
    (inv,) = invocations(tmp_path / "log")
    assert inv["env"] == {"X": "it's"}


def test_timestamps_fallback_without_python_on_the_node(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "command": ["fake-echo", "one", "two", "three"]}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "date", "mv", "rm", "mkdir", "chmod", "hostname", "cat", "dirname"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    proc = run_job_sh(pod_dir, tmp_path / "log", env={"PATH": str(bin_dir)})
    assert proc.returncode == 0, proc.stderr
    assert (pod_dir / "run-c.out").read_text() == "one\ntwo\nthree\n"
    stamps = (pod_dir / "run-c.ts").read_text().splitlines()
    assert len(stamps) == 3 and all(len(s) == 30 and s.endswith("Z") for s in stamps)


def test_mpi_flags_prefix_every_container_with_mpiexec(tmp_path: Path) -> None:
    config = config_for(tmp_path, extra=f"MpiexecPath: {tmp_path / 'mpiexec'}\n")
    mpiexec = tmp_path / "mpiexec"
    mpiexec.write_text('#!/bin/bash\necho "mpiexec $*" >> "$FAKE_RUNTIME_LOG.mpi"\nshift 4\nexec "$@"\n')
    mpiexec.chmod(0o755)
    pod = pod_json(containers=[{"name": "c", "image": "busybox", "command": ["fake-echo", "hi"]}],
                   annotations={"slurm-job.vk.io/mpi-flags": "--map-by core"})
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log", env={"SLURM_NTASKS": "4"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "log.mpi").read_text().startswith("mpiexec -np 4 --map-by core ")
    assert (pod_dir / "run-c.out").read_text() == "hi\n"


def test_mesh_heredoc_is_lifted_into_mesh_sh() -> None:
    pre = "echo start\ncat <<'EOFMESH' > $TMPDIR/mesh.sh\n#!/bin/bash\necho mesh $X\nEOFMESH\nchmod +x $TMPDIR/mesh.sh\n"
    rest, body = split_mesh(pre, "/data/p")
    assert body == b"#!/bin/bash\necho mesh $X\n"
    assert rest == "echo start\ncat /data/p/mesh.sh > $TMPDIR/mesh.sh\nchmod +x $TMPDIR/mesh.sh\n"


def test_lone_surrogates_and_nul_are_refused_with_the_field(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with pytest.raises(PodSpecError, match=r"env\[0\].value"):
        build(config, pod_json(containers=[{"name": "c", "image": "b", "env": [{"name": "A", "value": "x\x00y"}]}]))
    with pytest.raises(PodSpecError, match="command"):
        build(config, pod_json(containers=[{"name": "c", "image": "b", "command": ["\ud800"]}]))


def test_env_names_a_runtime_cannot_carry_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match="'my.var'"):
        build(config_for(tmp_path), pod_json(containers=[{"name": "c", "image": "b", "env": [{"name": "my.var", "value": "1"}]}]))


# --- byte-exact round trip ---------------------------------------------------------------------------

HOSTILE = ["", " ", "'", '"', "''", "\\", "$HOME", "${PATH}", "`id`", "$(id)", "a\nb", "\n", "trailing\n", "tab\there",
           "*", "?", "[a]", "!", "!!", "~", ";rm -rf /", "&&", "|", ">x", "<x", "%s%n", "--bind /:/host", "-e", "é ü 日本 🎉",
           "\r\n", "\x01\x1f\x7f", "{a,b}", "#not a comment", "VAR=1", "'\"'\"'", "\\'"]

ARG = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40) | st.sampled_from(HOSTILE)
ENV_NAME = st.from_regex(r"V_[A-Z0-9_]{0,8}", fullmatch=True)
CTR_NAME = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@st.composite
def hostile_pods(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(CTR_NAME, min_size=1, max_size=3, unique=True))
    n_init = draw(st.integers(0, len(names) - 1))
    containers = []
    for name in names:
        env_names = draw(st.lists(ENV_NAME, max_size=4, unique=True))
        containers.append({
            "name": name, "image": "busybox",
            "command": ["fake-echo", f"ctr={name}", *draw(st.lists(ARG, max_size=3))],
            "args": draw(st.lists(ARG, max_size=3)),
            "env": [{"name": n, "value": draw(ARG)} for n in env_names],
        })
    return pod_json(init=containers[:n_init], containers=containers[n_init:])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pod=hostile_pods())
def test_every_arg_and_env_value_reaches_the_container_byte_exact(tmp_path_factory: pytest.TempPathFactory, pod: dict[str, Any]) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    config = config_for(tmp)
    _, job, pod_dir = build(config, pod)
    bash_n(job.job_slurm, tmp, "job.slurm")
    bash_n(job.job_sh, tmp, "job.sh.check")
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp / "log")
    assert proc.returncode == 0, proc.stderr
    seen = {inv["args"][1]: inv for inv in invocations(tmp / "log")}
    for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        inv = seen[f"ctr={c['name']}"]
        assert inv["args"] == c["command"] + c["args"]
        assert inv["env"] == {e["name"]: e["value"] for e in c["env"]}
        out = (pod_dir / f"{'init' if c in pod['spec'].get('initContainers', []) else 'run'}-{c['name']}.out").read_bytes()
        assert out == "".join(w + "\n" for w in c["command"][1:] + c["args"]).encode()


def test_enroot_runtime_imports_creates_starts_and_removes(tmp_path: Path) -> None:
    enroot = tmp_path / "fake-enroot"
    enroot.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      "open(os.environ['FAKE_RUNTIME_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      "if sys.argv[1] == 'start': print('started')\n")
    enroot.chmod(0o755)
    config = config_for(tmp_path, extra=f"ContainerRuntime: enroot\nEnrootPath: {enroot}\n")
    pod = pod_json(containers=[{"name": "c", "image": "ubuntu:24.04", "command": ["echo"], "args": ["a b"], "workingDir": "/w",
                                "env": [{"name": "V", "value": "it's\nodd"}], "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                   annotations={"slurm-job.vk.io/enroot-mounts": "/scratch:/scratch", "slurm-job.vk.io/enroot-options": "--root"},
                   volumes=[{"name": "d", "emptyDir": {}}])
    _, job, pod_dir = build(config, pod)
    materialize(job, pod_dir)
    proc = run_job_sh(pod_dir, tmp_path / "log")
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    name = "vnode-0a1b2c3d-0000-4000-8000-000000000001-c"
    assert calls[0] == ["import", "--output", f"{pod_dir}/c.sqsh", "docker://ubuntu:24.04"]
    assert calls[1] == ["create", "--force", "--name", name, f"{pod_dir}/c.sqsh"]
    assert calls[2] == ["start", "--rw", "/scratch:/scratch", "--root", "--env", "V=it's\nodd", "--mount", f"{pod_dir}/emptyDirs/d:/data",
                        name, "/bin/sh", "-c", 'cd -- "$0" && exec "$@"', "/w", "echo", "a b"]
    assert calls[3] == ["remove", "--force", name]
    assert (pod_dir / "run-c.out").read_text() == "started\n"

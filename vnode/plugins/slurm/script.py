"""The pure builder of a pod's SLURM job: `job.slurm` (what sbatch reads) and `job.sh` (what runs
the containers), plus the other files the pod directory must hold. No I/O.

job.slurm: `#SBATCH` directives, then — when the data root is not a shared filesystem — a section
that writes every file of the pod directory on the compute node itself, then POD_IP, CommandPrefix,
the VK's wstunnel commands and the `pre-exec` annotation (raw shell by design: the user's own
script), then `job.sh`.

job.sh: init containers one after another (the first failure ends the job with its exit code),
then the regular containers in parallel; the job exits with the first non-zero exit code in spec
order. For each container it writes, next to the Go plugin's `<kind>-<name>.out` and `.status`,
`.started`/`.finished` (RFC 3339 times) and `.ts` (one timestamp per output line). SIGTERM (scancel,
time limit) is passed to the containers by SLURM; the script keeps waiting so every status is
recorded before SLURM's KillWait runs out.

Everything that comes from the pod is quoted with `shell.quote` (argv words) or validated before
it reaches a `#SBATCH` line (`directives`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from .config import SlurmConfig
from .directives import JobDirectives, escape_sbatch_word, header_lines
from .podspec import Container, Pod, PodSpecError
from .runtime import annotation_words, container_launch, env_file_name
from .shell import join, quote
from .volumes import EMPTYDIR_MODE, PlannedFile, VolumePlan

PRE_EXEC = "slurm-job.vk.io/pre-exec"
MPI_FLAGS = "slurm-job.vk.io/mpi-flags"
POD_IP = "interlink.eu/pod-ip"
WSTUNNEL = "interlink.eu/wstunnel-client-commands"
HEREDOC_END = "VNODE_EOF"  # cannot occur in base64 text: '_' is not in its alphabet
ENV_FILE_MODE = 0o600  # holds the pod's environment, secrets included
SCRIPT_MODE = 0o700
# The VK's FullMesh pre-exec writes mesh.sh with a heredoc; the Go plugin lifts it into the pod dir.
MESH_HEREDOC = re.compile(r"^([ \t]*)cat[ \t]+<<[ \t]*'EOFMESH'[ \t]*>[ \t]*(\S+)[ \t]*\n(.*?)^EOFMESH[ \t]*$\n?", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class JobFiles:
    """Everything `store` writes into the pod directory before sbatch runs."""

    job_slurm: str
    job_sh: str
    files: list[PlannedFile] = field(default_factory=list)  # env files, mesh.sh, volume data
    dirs: list[str] = field(default_factory=list)  # relative, 0700
    empty_dirs: list[str] = field(default_factory=list)  # relative, EMPTYDIR_MODE


def env_file_content(container: Container) -> bytes:
    """`NAME='value'` lines: singularity reads `--env-file` with shell rules, so single quotes carry
    any value byte for byte (and `--no-eval` keeps it from being expanded again)."""
    return "".join(f"{e.name}={quote(e.value)}\n" for e in container.env).encode("utf-8")


def split_mesh(pre_exec: str, pod_dir: str) -> tuple[str, bytes | None]:
    """Lift the FullMesh heredoc into `<pod dir>/mesh.sh` and copy it where the script expects it."""
    m = MESH_HEREDOC.search(pre_exec)
    if not m:
        return pre_exec, None
    indent, target, body = m.group(1), m.group(2), m.group(3)
    replacement = f"{indent}cat {quote(pod_dir + '/mesh.sh')} > {target}\n"
    return pre_exec[: m.start()] + replacement + pre_exec[m.end():], body.encode("utf-8")


def _utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PodSpecError(what, "is not valid Unicode text (lone surrogate)") from None


# --- job.sh ---------------------------------------------------------------------------------------

# The timestamping filter, run with python3 when the node has it (a bash loop otherwise). It must not
# contain a single quote: it is embedded in job.sh between single quotes.
STAMP_PY = """import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
out = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
ts = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
def put(fd, data):
    while data:
        data = data[os.write(fd, data):]
at_start = True
while True:
    data = os.read(0, 65536)
    if not data:
        break
    starts = data.count(b"\\n", 0, len(data) - 1) + (1 if at_start else 0)
    if starts:
        t = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000000000)) + ".%09dZ\\n" % (t % 1000000000)
        put(ts, (stamp * starts).encode())
    put(out, data)
    at_start = data.endswith(b"\\n")
"""

# The usage sampler, run with python3 when the node has it (no per-container figures otherwise). Every
# SAMPLE seconds it walks /proc once, finds each container's process tree below this job script (the
# root pid is in <kind>-<name>.pid, written by vnode_launch) and writes usage.json: per container the
# CPU time of the whole tree (utime+stime of live processes plus cutime+cstime of the ones they
# reaped), the sum of their resident memory, and the rate since the previous sample. A container whose
# .finished exists keeps its last figures. No single quote inside: embedded in job.sh like STAMP_PY.
SAMPLER_PY = """import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
work, period, job = sys.argv[1], float(sys.argv[2]), os.getppid()
tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
last = {}
def table():
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        procs[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), int(fields[21]) * page)
    return procs
def tree(root, children):
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen
while os.getppid() == job:
    now, procs = time.time(), table()
    children = {}
    for pid, (ppid, _cpu, _rss) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ours = tree(job, children)
    for entry in os.listdir(work):
        key = entry[:-4]
        if not entry.endswith(".pid") or os.path.exists(os.path.join(work, key + ".finished")):
            continue
        try:
            with open(os.path.join(work, entry)) as f:
                root = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if root not in ours:
            continue
        pids = tree(root, children) & procs.keys()
        cpu = sum(procs[p][1] for p in pids) * 1000000000 // tick
        rss = sum(procs[p][2] for p in pids)
        before = last.get(key)
        if before is not None:
            cpu = max(cpu, before["cpu_ns"])
        rate = None
        if before is not None and now > before["time"]:
            rate = int((cpu - before["cpu_ns"]) / (now - before["time"]))
        last[key] = {"cpu_ns": cpu, "rss": rss, "rate": rate, "time": now}
    with open(os.path.join(work, "usage.json.tmp"), "w") as f:
        json.dump({"time": now, "containers": last}, f)
    os.replace(os.path.join(work, "usage.json.tmp"), os.path.join(work, "usage.json"))
    time.sleep(period)
"""

JOB_SH_HELPERS = r"""
vnode_now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# Small state files are written whole (tmp + rename): the plugin never reads half a value.
vnode_put() { printf '%s\n' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }

vnode_fail() {
  printf '%s\n' "$1" > "$workingPath/job.error"
  printf '%s vnode: %s\n' "$(vnode_now)" "$1" >&2
  return 1
}

# Copies a container's output to <base>.out unchanged and the time each line began to <base>.ts,
# one RFC 3339 UTC timestamp per line (for logs --timestamps/--since). Ignores SIGTERM: it ends
# when the container closes its output, so the last lines are never lost.
vnode_stamp() {
  trap '' TERM INT
  if command -v python3 >/dev/null 2>&1; then
    exec python3 -c "$vnode_stamp_py" "$1" "$2"
  fi
  export TZ=UTC0
  local line now digits
  while IFS= read -r line || [ -n "$line" ]; do
    digits=${EPOCHREALTIME//[!0-9]/}
    if [ -n "$digits" ]; then
      printf -v now '%(%Y-%m-%dT%H:%M:%S)T.%s000Z' "${digits:0:${#digits}-6}" "${digits: -6}"
    else
      printf -v now '%(%Y-%m-%dT%H:%M:%S)T.000000000Z' -1
    fi
    printf '%s\n' "$now" >> "$2"
    printf '%s\n' "$line" >> "$1"
  done
}

# vnode_launch PIDFILE ARGV...: records its own pid (the root of the container's process tree, for
# the usage sampler), then becomes the container (a shell function runs in this subshell instead).
vnode_launch() {
  vnode_put "$1" "$BASHPID"
  shift
  if declare -F -- "$1" >/dev/null; then "$@"; else exec "$@"; fi
}

# vnode_run KIND NAME ARGV...: runs one container; records start, output, end and exit code.
vnode_run() {
  local kind="$1" name="$2" rc
  shift 2
  local base="$workingPath/$kind-$name"
  vnode_put "$base.started" "$(vnode_now)"
  vnode_launch "$base.pid" "$@" < /dev/null 2>&1 | vnode_stamp "$base.out" "$base.ts"
  rc=${PIPESTATUS[0]}
  vnode_put "$base.finished" "$(vnode_now)"
  vnode_put "$base.status" "$rc"
  return "$rc"
}

# Background containers: a TERM handler (not SIG_IGN, which the container would inherit) keeps this
# shell alive until its container has exited, so the status is always written.
vnode_run_bg() {
  trap 'vnode_stopping=1' TERM INT
  vnode_run "$@"
}

# wait PID, resumed when a trapped signal interrupts it while the process still runs.
vnode_wait() {
  local r
  while :; do
    wait "$1"
    r=$?
    if [ "$r" -gt 128 ] && kill -0 "$1" 2>/dev/null; then
      continue
    fi
    return "$r"
  done
}
"""


# hostPath types the kubelet checks before it starts a pod: the `test` flag and the words of the error.
_HOSTPATH_TESTS = {"Directory": ("-d", "a directory"), "File": ("-f", "a file"), "Socket": ("-S", "a socket"),
                   "CharDevice": ("-c", "a character device"), "BlockDevice": ("-b", "a block device")}


def _hostpath_check(path: str, htype: str, volume: str) -> str:
    p = quote(path)

    def fail(problem: str) -> str:
        return f"vnode_fail {quote(f'hostPath volume {volume}: {path} {problem}')} || return 1"

    if htype in _HOSTPATH_TESTS:
        flag, kind = _HOSTPATH_TESTS[htype]
        return f"  [ {flag} {p} ] || {{ {fail(f'is not {kind} on this node')}; }}"
    if htype == "DirectoryOrCreate":
        return f"  [ -d {p} ] || ( umask 022 && mkdir -p -- {p} ) || {{ {fail('cannot be created')}; }}"
    if htype == "FileOrCreate":
        return (f"  [ -e {p} ] || ( umask 022 && mkdir -p -- \"$(dirname -- {p})\" && : >> {p} ) "
                f"|| {{ {fail('cannot be created')}; }}")
    return f"  : no check for hostPath volume {quote(volume)} (type unset)"


def _setup_function(pod_dir: str, plan: VolumePlan) -> list[str]:
    lines = ["vnode_setup() {"]
    for d in plan.empty_dirs:
        p = quote(f"{pod_dir}/{d}")
        lines.append(f"  mkdir -p -- {p} && chmod {EMPTYDIR_MODE:o} -- {p} || {{ vnode_fail {quote(f'cannot create emptyDir {d}')} || return 1; }}")
    for check in plan.host_checks:
        lines.append(_hostpath_check(check.path, check.type, check.volume))
    seen: set[str] = set()
    for binds in plan.binds.values():
        for b in binds:
            src = f"{pod_dir}/{b.source}" if b.in_pod_dir else b.source
            if b.sub_path and src not in seen:  # a subPath that is not there yet becomes a directory, as on a kubelet
                seen.add(src)
                lines.append(f"  [ -e {quote(src)} ] || mkdir -p -- {quote(src)} || {{ vnode_fail {quote(f'cannot create subPath {src}')} || return 1; }}")
    lines.append("  return 0")
    lines.append("}")
    return lines


def _state_files(pod: Pod) -> list[str]:
    """The per-container state files a previous run (a requeued job) may have left."""
    names = []
    for c in pod.all_containers:
        for suffix in ("status", "started", "finished", "pid"):
            names.append(f"{c.kind}-{c.name}.{suffix}")
    return names + ["job.error", "usage.json"]


def _container_lines(config: SlurmConfig, pod: Pod, c: Container, pod_dir: str, plan: VolumePlan,
                     mpi_prefix: str) -> tuple[list[str], str]:
    """Function definitions needed (enroot) and the command words for vnode_run."""
    launch = container_launch(config, pod, c, pod_dir, plan.binds.get(c.name, []))
    command = (mpi_prefix + " " if mpi_prefix else "") + join(launch.argv)
    if not launch.setup and not launch.cleanup:
        return [], command
    fn = f"vnode_ctr_{c.kind}_{c.name.replace('-', '_')}"
    body = [f"{fn}() {{"]
    body += [f"  {join(cmd)} || return $?" for cmd in launch.setup]
    body += [f"  {command}", "  local rc=$?"]
    body += [f"  {join(cmd)} >/dev/null 2>&1" for cmd in launch.cleanup]
    body += ['  return "$rc"', "}"]
    return body, fn


def _mpi_prefix(config: SlurmConfig, pod: Pod) -> str:
    """`mpiexec -np $SLURM_NTASKS <flags>` in front of every container, when the pod asks for MPI.
    (In the Go plugin this annotation has no effect; "true" alone means "no extra flags".)"""
    if MPI_FLAGS not in pod.annotations:
        return ""
    value = pod.annotations[MPI_FLAGS].strip()
    flags = [] if value in ("", "true") else annotation_words(pod, MPI_FLAGS)
    return f'{quote(config.mpiexec_path)} -np "${{SLURM_NTASKS:-1}}" {join(flags)}'.rstrip()


def build_job_sh(config: SlurmConfig, pod: Pod, pod_dir: str, plan: VolumePlan) -> str:
    q_dir = quote(pod_dir)
    out = [
        f"#!{config.bash_path}",
        f"# vnode SLURM plugin: the containers of pod {pod.namespace}/{pod.name} (uid {pod.uid}).",
        "# Generated file. Per container it writes <init|run>-<name>.{out,ts,started,finished,status}.",
        f"workingPath={q_dir}",
        'SANDBOX="$workingPath"',
        "export workingPath SANDBOX",
        f"vnode_stamp_py='{STAMP_PY}'",
        f"vnode_sampler_py='{SAMPLER_PY}'",
        JOB_SH_HELPERS.strip("\n"),
        "",
    ]
    out += _setup_function(pod_dir, plan)
    mpi = _mpi_prefix(config, pod)
    launches = [(c, *_container_lines(config, pod, c, pod_dir, plan, mpi)) for c in pod.all_containers]
    for _c, fn_lines, _cmd in launches:
        if fn_lines:
            out += [""] + fn_lines
    out += [
        "",
        "####",
        "# Main",
        "####",
        "vnode_stopping=",
        "trap 'vnode_stopping=1' TERM INT",
        # state of a previous run of this job (SLURM requeued it); names are DNS labels, safe unquoted
        "rm -f -- " + " ".join(f'"$workingPath"/{n}' for n in _state_files(pod)),
        ('printf \'%s vnode: pod %s starts in SLURM job %s on %s\\n\' "$(vnode_now)" '
         f'{quote(f"{pod.namespace}/{pod.name} (uid {pod.uid})")} "${{SLURM_JOB_ID:-?}}" "$(hostname)"'),
        'vnode_setup || exit 1',
    ]
    if config.usage_sample_seconds > 0:
        out += [
            "# Per-container CPU and memory for kubectl top (usage.json); the job works without it.",
            "vnode_sampler=",
            "if command -v python3 >/dev/null 2>&1; then",
            f'  python3 -c "$vnode_sampler_py" "$workingPath" {config.usage_sample_seconds:g} </dev/null >/dev/null 2>&1 &',
            "  vnode_sampler=$!",
            "fi",
        ]
    for c, _fn, cmd in launches:
        if c.init:
            out += [
                f"vnode_run init {quote(c.name)} {cmd}",
                "vnode_rc=$?",
                'if [ "$vnode_rc" -ne 0 ]; then',
                f"  printf '%s vnode: init container %s failed with exit code %s\\n' \"$(vnode_now)\" {quote(c.name)} \"$vnode_rc\" >&2",
                '  exit "$vnode_rc"',
                "fi",
                '[ -z "$vnode_stopping" ] || exit 143',
            ]
    out.append("vnode_pids=()")
    for c, _fn, cmd in launches:
        if not c.init:
            out.append(f'vnode_run_bg run {quote(c.name)} {cmd} &')
            out.append('vnode_pids+=("$!")')
    out += [
        "vnode_rc=0",
        'for vnode_pid in "${vnode_pids[@]}"; do',
        '  vnode_wait "$vnode_pid"',
        "  vnode_r=$?",
        '  if [ "$vnode_rc" -eq 0 ] && [ "$vnode_r" -ne 0 ]; then vnode_rc=$vnode_r; fi',
        "done",
        'printf \'%s vnode: containers done, exit code %s\\n\' "$(vnode_now)" "$vnode_rc"',
        *(['[ -z "$vnode_sampler" ] || kill "$vnode_sampler" 2>/dev/null'] if config.usage_sample_seconds > 0 else []),
        'exit "$vnode_rc"',
        "",
    ]
    return "\n".join(out)


# --- job.slurm ------------------------------------------------------------------------------------


def _materialize(pod_dir: str, dirs: list[str], files: list[PlannedFile]) -> list[str]:
    """Shell that writes the pod directory's files on the compute node (data root not shared)."""
    lines = [
        "# SHARED_FS is not true: the job writes the pod's files on the compute node itself.",
        "(",
        "  set -e",
        "  umask 077",
        f"  mkdir -p -- {quote(pod_dir)}",
        f"  cd -- {quote(pod_dir)}",
    ]
    for d in dirs:
        lines.append(f"  mkdir -p -- {quote(d)}")
    for f in files:
        encoded = base64.encodebytes(f.content).decode("ascii")
        lines.append(f"  base64 -d > {quote(f.path)} <<'{HEREDOC_END}'")
        if encoded:
            lines.append(encoded.rstrip("\n"))
        lines.append(HEREDOC_END)
        lines.append(f"  chmod {f.mode:o} -- {quote(f.path)}")
    lines.append(") || { printf 'vnode: cannot write the pod files on %s\\n' \"$(hostname)\" >&2; exit 1; }")
    return lines


def _tsocks(config: SlurmConfig, pod_dir: str) -> tuple[list[str], list[str]]:
    conf = quote(f"{pod_dir}/tsocks.conf")
    pre = [
        "# Tsocks: a SOCKS tunnel through the login node for jobs without outbound network.",
        "vnode_port=10000",
        'while [ "$vnode_port" -lt 65000 ] && ss -tln 2>/dev/null | grep -q ":$vnode_port "; do vnode_port=$((vnode_port + 1)); done',
        f'ssh -4 -N -D "$vnode_port" {quote(config.tsocks_login_node)} &',
        "vnode_ssh_pid=$!",
        f'printf \'local = 10.0.0.0/255.0.0.0\\nserver = 127.0.0.1\\nserver_port = %s\\n\' "$vnode_port" > {conf}',
        f"export TSOCKS_CONF_FILE={conf} LD_PRELOAD={quote(config.tsocks_path)}",
    ]
    post = ['kill -15 "$vnode_ssh_pid" 2>/dev/null']
    return pre, post


def build_job(config: SlurmConfig, pod: Pod, pod_dir: str, directives: JobDirectives, plan: VolumePlan) -> JobFiles:
    """The job for `pod`. Raises PodSpecError/DirectiveError naming the culprit."""
    for key, value in pod.annotations.items():
        _utf8(value, f"metadata.annotations[{key}]")
    for c in pod.all_containers:
        for i, word in enumerate([*(c.command or ()), *(c.args or ())]):
            _utf8(word, f"{c.where}.command/args[{i}]")
        for i, e in enumerate(c.env):
            _utf8(e.value, f"{c.where}.env[{i}].value")

    files: list[PlannedFile] = []
    for c in pod.all_containers:
        if c.env and config.container_runtime == "singularity":
            files.append(PlannedFile(env_file_name(c), env_file_content(c), ENV_FILE_MODE))
    pre_exec, mesh = split_mesh(pod.annotations.get(PRE_EXEC, ""), pod_dir)
    if mesh is not None:
        files.append(PlannedFile("mesh.sh", mesh, SCRIPT_MODE))
    files += plan.files

    job_sh = build_job_sh(config, pod, pod_dir, plan)
    body: list[str] = [f"#!{config.bash_path}"]
    body += header_lines(pod.uid, f"{pod_dir}/job.out", directives.directives)
    body.append(f"# vnode SLURM plugin: pod {pod.namespace}/{pod.name} (uid {pod.uid}). Generated file.")
    if not config.shared_fs:
        body += _materialize(pod_dir, plan.dirs, [PlannedFile("job.sh", job_sh.encode("utf-8"), SCRIPT_MODE), *files])
    post: list[str] = []
    if config.tsocks:
        pre, post = _tsocks(config, pod_dir)
        body += pre
    if POD_IP in pod.annotations:
        body.append(f"export POD_IP={quote(pod.annotations[POD_IP])}")
    if config.command_prefix:
        body.append(config.command_prefix)
    if WSTUNNEL in pod.annotations:
        body.append(pod.annotations[WSTUNNEL])
    if pre_exec:
        body.append(pre_exec)
    body.append(f"{quote(config.bash_path)} {quote(pod_dir + '/job.sh')}")
    body.append("vnode_job_rc=$?")
    body += post
    body.append('exit "$vnode_job_rc"')
    job_slurm = "\n".join(body) + "\n"
    escape_sbatch_word(pod_dir)  # the --output line must be expressible
    return JobFiles(job_slurm, job_sh, files, list(plan.dirs), list(plan.empty_dirs))

"""`hack/testbed up|down|status|env|build|logs`: the testbed's single entry point."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import control_plane, kubebuild, pki, procs, slurm
from .component import Component, ComponentError, base_env
from .layout import EXTRA_INSTANCES, SLURM_CONF, Layout, LayoutError, state_root

# Start order; `down` stops in reverse.
ORDER = (
    "munged",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)
KUBE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SLURM_BIN_DIR = Path("/usr/bin")  # Debian's slurm-client
JOB_DRAIN_TIMEOUT = 45  # KillWait (30 s) + margin: cancelled jobs get SIGTERM, then SIGKILL


def _say(msg: str) -> None:
    print(f"testbed: {msg}", file=sys.stderr, flush=True)


def _owner(layout: Layout) -> str:
    return str(layout.state)


def all_components(layout: Layout) -> dict[str, Component]:
    comps = control_plane.components(layout, _owner(layout))
    if not layout.kube_only:
        comps |= slurm.components(layout, _owner(layout))
    return {name: comps[name] for name in ORDER if name in comps}


@contextmanager
def _locked(layout: Layout):
    """One up/down at a time (parallel pytest sessions, a dev shell): machine-wide for a full instance
    (ports, /etc/slurm and the munge socket exist once per machine), per state dir for a kube-only one."""
    layout.state.mkdir(parents=True, exist_ok=True)
    with open(layout.lock_file, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _preflight(comps: dict[str, Component]) -> None:
    """Refuse to touch machine-wide config while daemons we did not start hold our ports or socket
    (another testbed state dir, a distro service): fail naming the component instead."""
    for c in comps.values():
        if c.running() is None and c.port is not None and procs.port_open(c.port):
            raise ComponentError(
                c.name,
                f"port 127.0.0.1:{c.port} is already in use by a process this testbed did not start "
                f"(see `ss -ltnp 'sport = :{c.port}'`); stop it first",
                None,
            )
    munge = comps.get("munged")
    if munge is not None and munge.running() is None and munge.probe() is None:
        raise ComponentError("munged", f"a munged this testbed did not start already serves {slurm.MUNGE_SOCKET}", None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _saved_info() -> dict:
    return _read_json(state_root() / "testbed.json")


def saved_instance() -> dict:
    """{"kube_only": bool, "port_offset": int} recorded by the last `up` in this state dir."""
    saved = _read_json(state_root() / "instance.json")
    return {"kube_only": bool(saved.get("kube_only", False)), "port_offset": int(saved.get("port_offset", 0))}


def current_layout(resolve: bool = True, kube_only: bool | None = None, port_offset: int | None = None) -> Layout:
    """The instance in VNODE_TESTBED_STATE: kube_only/port_offset as given to `up`, else as recorded
    there by the last `up`. Version: K8S_VERSION if set; else that of a testbed that is (partly)
    running, so `up` never swaps binaries under a live cluster, or of a kube-only instance; else the
    newest 1.35.x on the proxy."""
    saved_mode = saved_instance()
    mode = {
        "kube_only": saved_mode["kube_only"] if kube_only is None else kube_only,
        "port_offset": saved_mode["port_offset"] if port_offset is None else port_offset,
    }
    requested = os.environ.get("K8S_VERSION")
    saved = _saved_info().get("k8s_version")
    if not requested and saved:
        layout = Layout.for_version(saved, **mode)
        # A kube-only instance exists for its version: it keeps it until K8S_VERSION says otherwise.
        if not resolve or layout.kube_only or any(c.running() for c in all_components(layout).values()):
            return layout
    if not requested and not resolve:
        raise SystemExit("testbed: no testbed has been brought up yet (run `hack/testbed up`)")
    return Layout.for_version(kubebuild.resolve_version(requested), **mode)


def _check_instance_mode(layout: Layout) -> None:
    """`up` with other --kube-only/--port-offset than the instance running in this state dir would
    orphan its daemons (different component set, ports): refuse, naming both."""
    recorded = saved_instance()
    wanted = {"kube_only": layout.kube_only, "port_offset": layout.port_offset}
    if recorded == wanted:
        return
    old = Layout(layout.k8s_version, layout.cache, layout.state, **recorded)
    running = [name for name, c in all_components(old).items() if c.running()]
    if running:
        raise ComponentError(
            "instance",
            f"{layout.state} holds a running instance with {recorded} ({', '.join(running)}), not {wanted}; "
            "run `hack/testbed down` for it first, or use another VNODE_TESTBED_STATE",
            None,
        )


def info(layout: Layout) -> dict:
    """Everything a test or a shell needs to reach the testbed; also saved as state/testbed.json."""
    """Everything a test or a shell needs to reach the testbed; also saved as state/testbed.json.
    A kube-only instance has no SLURM or stand-in keys (and no SLURM_CONF in env)."""
    build = kubebuild.build_info(layout)
    p = layout.pki_dir
    path_dirs = [str(layout.bin_dir)] + ([] if layout.kube_only else [str(layout.standin_dir)])
    path = os.pathsep.join([*path_dirs, os.environ.get("PATH", "")])
    out = {
        "k8s_version": layout.k8s_version,
        "etcd_version": build.get("etcd_version"),
        "kube_only": layout.kube_only,
        "port_offset": layout.port_offset,
        "apiserver_url": layout.apiserver_url,
        "kubeconfig": str(layout.admin_kubeconfig),
        "kubectl": str(layout.bin_dir / "kubectl"),
        "bin_dir": str(layout.bin_dir),
        "pki_dir": str(p),
        "ca_cert": str(p / "ca.crt"),
        "ca_key": str(p / "ca.key"),
        "kubelet_client_cert": str(p / "apiserver-kubelet-client.crt"),
        "kubelet_client_key": str(p / "apiserver-kubelet-client.key"),
        "kubelet_client_user": pki.KUBELET_CLIENT_USER,
        "state_dir": str(layout.state),
        "log_dir": str(layout.log_dir),
        "env": {"KUBECONFIG": str(layout.admin_kubeconfig), "PATH": path},
    }
    if not layout.kube_only:
        out |= {
            "slurm_bin_dir": str(SLURM_BIN_DIR),
            "slurm_conf": str(SLURM_CONF),
            "slurm_partition": slurm.PARTITION,
            "slurm_node": slurm.NODE,
            "standin_dir": str(layout.standin_dir),
            "singularity": str(layout.standin_dir / "singularity"),
        }
        out["env"]["SLURM_CONF"] = str(SLURM_CONF)
    return out


def _journal(layout: Layout, what: str) -> None:
    """One line per up/down in logs/testbed.log, naming who asked: several sessions share a testbed."""
    parent = procs.cmdline(os.getppid())[:200]
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.log_dir / "testbed.log", "a") as f:
        f.write(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what} pid={os.getpid()} parent={os.getppid()} [{parent}] cache={layout.cache}\n"
        )


def up(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise SystemExit("testbed: `up` must run as root (munge, MariaDB and SLURM daemons)")
    t0 = time.monotonic()
    with _locked(layout):
        _journal(layout, "up --kube-only" if layout.kube_only else "up")
        _check_instance_mode(layout)
        if kubebuild.ensure_binaries(layout):
            _say(f"binaries built into {layout.bin_dir}")
        if pki.ensure_pki(layout.pki_dir):
            _say(f"new PKI in {layout.pki_dir}")
        pki.write_kubeconfigs(layout.apiserver_url, layout.pki_dir, layout.kube_dir)
        comps = all_components(layout)
        _preflight(comps)
        layout.instance_file.write_text(
            json.dumps({"kube_only": layout.kube_only, "port_offset": layout.port_offset}) + "\n"
        )
        if layout.kube_only:
            _up_kube(layout, comps)
        else:
            _up_full(layout, comps)
        layout.info_file.write_text(json.dumps(info(layout), indent=1) + "\n")
    _say(f"up in {time.monotonic() - t0:.1f}s; logs in {layout.log_dir}; `hack/testbed env` for a shell")


def _starter(comps: dict[str, Component]):
    env = base_env()

    def start(name: str, wait: bool = True) -> None:
        _say(f"{name}: {comps[name].start(env)}")
        if wait:
            comps[name].wait_ready()

    return start


def _up_kube(layout: Layout, comps: dict[str, Component]) -> None:
    start = _starter(comps)
    start("etcd")
    start("kube-apiserver")
    control_plane.bootstrap_rbac(layout)
    start("kube-controller-manager", wait=False)
    start("kube-scheduler", wait=False)
    comps["kube-controller-manager"].wait_ready()
    comps["kube-scheduler"].wait_ready()


def _up_full(layout: Layout, comps: dict[str, Component]) -> None:
    slurm.prepare(layout)
    start = _starter(comps)
    # etcd and the apiserver first: the apiserver's ~10 s start overlaps SLURM's.
    start("etcd")
    start("kube-apiserver", wait=False)
    start("munged")
    start("mariadb")
    slurm.ensure_database(layout)
    start("slurmdbd")
    slurm.ensure_cluster_registered()
    start("slurmctld")
    start("slurmd")
    comps["kube-apiserver"].wait_ready()
    control_plane.bootstrap_rbac(layout)
    start("kube-controller-manager", wait=False)
    start("kube-scheduler", wait=False)
    comps["kube-controller-manager"].wait_ready()
    comps["kube-scheduler"].wait_ready()


def down(layout: Layout, purge: bool) -> None:
    with _locked(layout):
        _journal(layout, "down --purge" if purge else "down")
        comps = all_components(layout)
        if "slurmctld" in comps and comps["slurmctld"].running():
            slurm.cancel_all_jobs()
            deadline = time.monotonic() + JOB_DRAIN_TIMEOUT
            while slurm.jobs_remaining() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in reversed(comps):
            if comps[name].stop():
                _say(f"{name}: stopped")
        # Anything our daemons forked off into a session of its own (slurmstepd and its job) is still
        # in the testbed's cgroup; with the daemons gone, those are leftovers of ours and nothing else's.
        for pid in procs.owned_pids(_owner(layout)):
            rec = procs.ProcRecord("leftover", pid, procs.start_ticks(pid) or -1, [], "", "")
            if procs.stop(rec, grace=5):
                _say(f"stopped leftover pid {pid} ({procs.cmdline(pid) or 'exited'})")
        procs.remove_cgroup(_owner(layout))
        if purge:
            for d in (layout.etcd_data, layout.slurm_dir, layout.mariadb_dir, layout.pki_dir, layout.kube_dir):
                shutil.rmtree(d, ignore_errors=True)
            layout.info_file.unlink(missing_ok=True)
            layout.instance_file.unlink(missing_ok=True)
            _say(f"purged state under {layout.state} (binaries stay cached in {layout.bin_dir})")


def status(layout: Layout, as_json: bool) -> int:
    comps = all_components(layout)
    rows, healthy = [], True
    for name, c in comps.items():
        rec = c.running()
        if rec is None:
            state, detail = "stopped", ""
        else:
            reason = c.probe()
            state, detail = ("ready", "") if reason is None else ("unhealthy", reason)
        healthy &= state == "ready"
        rows.append(
            {"component": name, "state": state, "pid": rec.pid if rec else None, "detail": detail, "log": str(c.log)}
        )
    if as_json:
        print(
            json.dumps(
                {
                    "k8s_version": layout.k8s_version,
                    "kube_only": layout.kube_only,
                    "apiserver_url": layout.apiserver_url,
                    "components": rows,
                },
                indent=1,
            )
        )
    else:
        kind = f"kube-only, port offset {layout.port_offset}" if layout.kube_only else "full"
        print(f"Kubernetes v{layout.k8s_version} ({kind})   state {layout.state}   binaries {layout.bin_dir}")
        print(f"  apiserver {layout.apiserver_url}")
        for r in rows:
            pid = str(r["pid"] or "-")
            print(f"  {r['component']:<24} {r['state']:<10} pid {pid:<8} {r['detail']}")
    return 0 if healthy else 3


def env_lines(layout: Layout) -> str:
    i = info(layout)
    q = shlex.quote
    if layout.kube_only:
        return "\n".join(
            [
                f"export KUBECONFIG={q(i['kubeconfig'])}",
                f'export PATH={q(i["bin_dir"])}:"$PATH"',
                f"export VNODE_TESTBED_STATE={q(i['state_dir'])}",
            ]
        )
    return "\n".join(
        [
            f"export KUBECONFIG={q(i['kubeconfig'])}",
            f'export PATH={q(i["bin_dir"])}:{q(i["standin_dir"])}:"$PATH"',
            f"export SLURM_CONF={q(i['slurm_conf'])}",
            f"export VNODE_TESTBED_STATE={q(i['state_dir'])}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/testbed", description="vnode's local Kubernetes + SLURM testbed")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="build (if needed) and start everything; reuses what already runs")
    u.add_argument(
        "--kube-only",
        action="store_true",
        default=None,
        help="control plane only (no SLURM): a second instance next to the shared one, in its own VNODE_TESTBED_STATE",
    )
    u.add_argument(
        "--port-offset",
        type=int,
        default=None,
        metavar="N",
        help="add N to every control-plane port (needs --kube-only); remembered by the state dir",
    )
    d = sub.add_parser("down", help="stop exactly the processes the testbed started")
    d.add_argument("--purge", action="store_true", help="also delete etcd/SLURM/MariaDB data and the PKI")
    s = sub.add_parser("status", help="show each component; exit 3 unless all are ready")
    s.add_argument("--json", action="store_true")
    e = sub.add_parser("env", help="print export lines (or --json with every path the tests use)")
    e.add_argument("--json", action="store_true")
    b = sub.add_parser("build", help="only build/cache the Kubernetes binaries")
    b.add_argument("--all", action="store_true", help="also every extra instance's version the tests use (1.36)")
    lg = sub.add_parser("logs", help="print the tail of a component's log (or list the logs)")
    lg.add_argument("component", nargs="?")
    lg.add_argument("-n", type=int, default=60)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "up":
            layout = current_layout(kube_only=args.kube_only, port_offset=args.port_offset)
            if layout.port_offset and not layout.kube_only:
                raise LayoutError("--port-offset needs --kube-only: SLURM's ports and config are machine-wide")
            up(layout)
        elif args.cmd == "build":
            layouts = [current_layout()]
            if args.all:
                layouts += [Layout.for_version(x.k8s_version) for x in EXTRA_INSTANCES]
            for layout in layouts:
                kubebuild.ensure_binaries(layout)
                print(layout.bin_dir)
        elif args.cmd == "down":
            down(current_layout(), args.purge)
        elif args.cmd == "status":
            return status(current_layout(), args.json)
        elif args.cmd == "env":
            layout = current_layout()
            print(json.dumps(info(layout), indent=1) if args.json else env_lines(layout))
        elif args.cmd == "logs":
            layout = current_layout()
            if args.component is None:
                for p in sorted(layout.log_dir.glob("*.log")):
                    print(p)
            else:
                print(procs.tail(layout.log_dir / f"{args.component}.log", args.n))
    except ComponentError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1
    except kubebuild.BuildError as e:
        print(f"testbed: building Kubernetes failed: {e}", file=sys.stderr)
        return 1
    except LayoutError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 2
    return 0

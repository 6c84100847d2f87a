"""Render a results directory (bench/results/<stamp>/) into BENCHMARKS.md and PNG plots.

    python -m bench.report bench/results/<stamp>

BENCHMARKS.md is generated: tables from the JSON results, then the hand-written analysis in
bench/findings.md (kept across runs). Plots go to bench/plots/.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .stats import percentile, ratio

REPO = Path(__file__).resolve().parent.parent
PLOTS = REPO / "bench" / "plots"
FINDINGS = REPO / "bench" / "findings.md"
OUTPUT = REPO / "BENCHMARKS.md"

# The targets for vnode on this 2-core machine.
TARGET_ALL_RUNNING_AFTER_LAST_CREATE_S = 20.0  # 1000-pod burst
TARGET_AGENT_ADDED_P99_S = 1.0
TARGET_SPEEDUP_VS_INTERLINK = 5.0
TARGET_RSS_5000_MIB = 250.0


def load(results: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    meta = json.loads((results / "meta.json").read_text())
    bursts = [json.loads(p.read_text()) for p in sorted(results.glob("burst-*.json"))]
    bursts.sort(key=lambda r: (r["impl"], r["pods"]))
    slurm_path = results / "slurm.json"
    slurm = json.loads(slurm_path.read_text()) if slurm_path.exists() else None
    return meta, bursts, slurm


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def burst_table(bursts: list[dict[str, Any]]) -> list[str]:
    lines = [("| implementation | pods | creates took | first create → all Running | last create → all Running "
             "| latency p50 / p99 (creationTimestamp → Running) | create ack → Running p50 / p99 | delete all "
             "| agent CPU (create→Running / total) | agent peak RSS | API requests (per pod) "
             "| /status calls per 5 s cycle (pods per call) | load avg (start → end) "
             "| agent QPS/burst/workers · code |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in bursts:
        reqs = r.get("kube_requests") or {}
        total = reqs.get("total")
        per_pod = f" ({total / r['pods']:.1f})" if total else ""
        lines.append(
            f"| {r['impl']} | {r['pods']} | {fmt(r['last_create'] - r['first_create'], 1, ' s')} "
            f"| {fmt(r['create_to_all_running_s'], 1, ' s')} | {fmt(r['last_create_to_all_running_s'], 1, ' s')} "
            f"| {fmt(r['latency_creation_ts_p50'], 2)} / {fmt(r['latency_creation_ts_p99'], 2)} s "
            f"| {fmt(r['latency_ack_p50'], 2)} / {fmt(r['latency_ack_p99'], 2)} s "
            f"| {fmt(r['delete_all_s'], 1, ' s')} | {fmt(r['cpu_create_s'], 1)} / {fmt(r['cpu_total_s'], 1)} s "
            f"| {fmt(r['peak_rss_mib'], 0, ' MiB')} | {fmt(total)}{per_pod} "
            f"| {fmt(r['status_calls_per_cycle'], 2)} ({fmt(r['pods_per_status_call'], 0)}) "
            f"| {_load(r)} | {_agent(r)} |")
        for note in r.get("notes") or []:
            lines.append(f"|  | ↳ {note} |||||||||||||")
    return lines


def _agent(r: dict[str, Any]) -> str:
    st = r.get("agent_settings")
    settings = f"{st['KubeAPIQPS']:g}/{st['KubeAPIBurst']}/{st['PodWorkers']}" if st else "n/a"
    return f"{settings} · {r.get('agent_source') or 'n/a'}"


def _load(r: dict[str, Any]) -> str:
    load = r.get("loadavg")
    return f"{load[0]:.1f} → {load[1]:.1f}" if load else "n/a"


def targets(bursts: list[dict[str, Any]], interlink_built: bool) -> list[str]:
    def find(impl: str, n: int) -> dict[str, Any] | None:
        return next((r for r in bursts if r["impl"] == impl and r["pods"] == n), None)

    lines = ["| target (vnode, defaults) | measured | met? |", "|---|---|---|"]
    b1000, b5000 = find("vnode", 1000), find("vnode", 5000)
    if b1000:
        v = b1000["last_create_to_all_running_s"]
        lines.append(f"| 1000-pod burst all Running ≤ {TARGET_ALL_RUNNING_AFTER_LAST_CREATE_S:.0f} s after the last create "
                     f"| {fmt(v, 1, ' s')} | {_met(v is not None and v <= TARGET_ALL_RUNNING_AFTER_LAST_CREATE_S)} |")
        p99 = b1000["agent_added_p99"]
        lines.append(f"| 1000-pod burst: p99 agent-added latency ≤ {TARGET_AGENT_ADDED_P99_S:.0f} s "
                     f"| {fmt(p99, 2, ' s')} | {_met(not math.isnan(p99) and p99 <= TARGET_AGENT_ADDED_P99_S)} |")
    lines.append(f"| ≥ {TARGET_SPEEDUP_VS_INTERLINK:.0f}× faster than interLink | "
                 + ("see ratios" if interlink_built else "not measured: interLink could not be built here") + " | "
                 + ("see ratios" if interlink_built else "unknown") + " |")
    if b5000:
        rss = b5000["peak_rss_mib"]
        lines.append(f"| 5000 pods: agent RSS ≤ {TARGET_RSS_5000_MIB:.0f} MB | {fmt(rss, 0, ' MiB')} "
                     f"| {_met(rss <= TARGET_RSS_5000_MIB)} |")
    calls = [(r["pods"], r["status_calls_per_cycle"]) for r in bursts if r["impl"] == "vnode"]
    if calls:
        text = ", ".join(f"{n}: {fmt(c, 2)}" for n, c in calls)
        constant = len({round(c or 0) for _, c in calls}) == 1
        lines.append(f"| /status calls per cycle constant in the number of pods | {text} | {_met(constant)} |")
    return lines


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def ratio_table(bursts: list[dict[str, Any]]) -> list[str]:
    ref = {r["pods"]: r for r in bursts if r["impl"] == "interlink"}
    ours = {r["pods"]: r for r in bursts if r["impl"] == "vnode"}
    lines = ["| pods | all Running (interLink / vnode) | p99 latency | delete all | agent CPU | peak RSS |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(set(ref) & set(ours)):
        a, b = ref[n], ours[n]
        cells = [ratio(a[k], b[k]) for k in ("create_to_all_running_s", "latency_ack_p99", "delete_all_s",
                                            "cpu_total_s", "peak_rss_mib")]
        lines.append(f"| {n} | " + " | ".join(fmt(c, 1, "×") for c in cells) + " |")
    return lines if len(lines) > 2 else []


def plots(bursts: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    written = []
    for n in sorted({r["pods"] for r in bursts}):
        rows = [r for r in bursts if r["pods"] == n]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in rows:
            xs = [t for t, _ in r["running_series"]]
            ys = [c for _, c in r["running_series"]]
            left.step(xs, ys, where="post", label=r["impl"])
            lat = r["latencies_ack"]
            if lat:
                right.plot(lat, [100 * (i + 1) / len(lat) for i in range(len(lat))], label=r["impl"])
        left.set(title=f"{n}-pod burst: pods Running over time", xlabel="seconds since first create",
                 ylabel="pods Running")
        right.set(title=f"{n}-pod burst: latency CDF (create ack → Running seen)", xlabel="seconds",
                  ylabel="% of pods")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = PLOTS / f"burst-{n}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return [f"![{p.stem}](bench/plots/{p.name})" for p in written]


def slurm_section(slurm: dict[str, Any] | None) -> list[str]:
    if not slurm:
        return ["Not run in this results set (`--skip-slurm`)."]
    lines = []
    for run in slurm.get("runs", []):
        lines += [f"**{run['label']}**: {run['pods']} pods, {run['succeeded']} Succeeded, {run['failed']} Failed, "
                  f"first create → all Succeeded {fmt(run.get('all_done_s'), 1, ' s')}; "
                  f"latency to Succeeded p50/p99 {fmt(run.get('done_p50'), 1)} / {fmt(run.get('done_p99'), 1)} s; "
                  f"SLURM command invocations by the plugin: "
                  + ", ".join(f"`{k}` {v}" for k, v in sorted(run.get("slurm_calls", {}).items())) + "."]
        for note in run.get("notes") or []:
            lines.append(f"- {note}")
    logs = slurm.get("logs")
    if logs:
        lines += ["", "| `kubectl logs` through the apiserver → vnode kubelet endpoint → SLURM plugin | value |",
                  "|---|---:|"]
        if logs.get("follow_latencies"):
            lat = logs["follow_latencies"]
            lines.append(f"| `kubectl logs -f` line latency p50 / p99 / max ({len(lat)} lines) "
                         f"| {percentile(lat, 50):.2f} / {percentile(lat, 99):.2f} / {max(lat):.2f} s |")
        if logs.get("full_bytes"):
            lines.append(f"| full log ({logs['full_bytes'] / 1e6:.0f} MB) read with `kubectl logs` "
                         f"| {logs['full_seconds']:.1f} s = {logs['full_bytes'] / 1e6 / logs['full_seconds']:.1f} MB/s |")
        for note in logs.get("notes") or []:
            lines.append(f"| note: {note} | |")
    return lines


def render(results: Path) -> str:
    meta, bursts, slurm = load(results)
    m, v, il = meta["machine"], meta["versions"], meta["interlink"]
    out = [
        "# vnode benchmarks",
        "",
        ("Generated by `make bench` (`python -m bench.run`, then `python -m bench.report`) from "
        f"`bench/results/{results.name}/`. Not part of the test suite: nothing here passes or fails a build."),
        "",
        (f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(the machine is shared with the testbed's control plane, SLURM and other work)."),
        (f"- Versions: vnode {v['vnode_commit']}, Kubernetes {v['kubernetes']} (kube-apiserver, etcd {v['etcd']}, "
        f"built from the Go module proxy by hack/testbed), {v['go']}, {v['slurm']}."),
        (f"- Command: `{meta['command']}`; pods bound {'directly (spec.nodeName)' if meta['bind'] == 'direct' else 'by the scheduler'}; "
        f"stub plugin reports Running {meta['running_after']} s after /create; status period {meta['status_period']} s."),
        ("- The agent and the load generator use the testbed's admin kubeconfig (exempt from API priority "
        "and fairness); the apiserver runs with its default `--max-requests-inflight`."),
        "",
        "## interLink (Go) side by side",
        "",
    ]
    if il["built"]:
        out += [f"interLink binaries: `{il['bin_dir']}`.", ""]
        out += ratio_table(bursts) or ["(no interLink burst results in this set)"]
    else:
        out += [("**Not measured.** `hack/interlink/build` could not build interLink's virtual-kubelet and API (nor "
                "the Go SLURM plugin) on this machine, so every ratio against interLink is missing. Its output:"),
                "", "```", il["reason"], "```", ""]
    out += ["", "## Burst onto one virtual node (stub plugin)", ""]
    out += burst_table(bursts)
    out += ["", ("API requests = the agent's own count of requests it sent to the apiserver, from the first create "
            "to the last pod deleted (watches count once). Latency columns are per pod; \"agent-added\" latency in "
            "the targets is create ack → Running seen minus the stub's configured delay."), ""]
    out += ["### Targets", ""] + targets(bursts, il["built"]) + [""]
    out += ["### Plots", ""] + plots(bursts) + [""]
    out += ["## Real SLURM", ""] + slurm_section(slurm) + [""]
    if FINDINGS.exists():
        out += [FINDINGS.read_text().rstrip(), ""]
    return "\n".join(out)


def write(results: Path) -> None:
    OUTPUT.write_text(render(results))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report bench/results/<stamp>", file=sys.stderr)
        return 2
    write(Path(args[0]))
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

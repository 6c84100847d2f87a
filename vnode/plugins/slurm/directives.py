"""`#SBATCH` directives: parsed from annotations and flavors, computed from pod resources, merged
with a documented precedence, and rendered so sbatch reads back exactly what was meant.

sbatch reads `#SBATCH` lines itself (not through a shell): it splits on blanks, honours '...',
"..." and backslash escapes, and treats an unescaped `#` as a comment. So every value is validated
(no newline or other control character can be carried on a line; `packjob` is blanked by sbatch)
and rendered with backslash escapes. Quoting alone would not protect a newline.

Precedence, lowest first (a higher layer replaces a whole *group* of lower-layer options, so a
pod asking `--mem-per-cpu` never also gets the computed `--mem`, which sbatch would reject):
  1. plugin defaults (DefaultCPU, DefaultMemory, DefaultUID) — only what nothing else sets;
  2. the flavor (SlurmFlags, CPUDefault, MemoryDefault, UID);
  3. the pod: container resources and spec.securityContext.runAsUser;
  4. the annotation flags (the user's explicit SLURM request).
Within a layer, the last occurrence of an option wins (short and long spellings are one option).
Pure.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import Flavor, SlurmConfig
from .podspec import Container, Pod
from .quantity import MIB, QuantityError, cpu_millis, memory_bytes

FLAGS_ANNOTATIONS = (  # read in this order; later ones win
    "slurm-job.knoc.io/flags",  # legacy (knoc), still in the Go plugin's README examples
    "job.vk.io/flags",  # as OSCAR writes it
    "slurm-job.vk.io/flags",
)
FLAVOR_ANNOTATION = "slurm-job.vk.io/flavor"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")

REQUIRED, OPTIONAL, NONE = "required", "optional", "none"
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_=:,./+%@^~!?*()\[\]{}<>$&;|-]+$")

# sbatch's options (SLURM 22.05 … 25.x): long name → (short alias, argument).
SBATCH_OPTIONS: dict[str, tuple[str, str]] = {
    "account": ("A", REQUIRED), "acctg-freq": ("", REQUIRED), "array": ("a", REQUIRED),
    "batch": ("", REQUIRED), "bb": ("", REQUIRED), "bbf": ("", REQUIRED), "begin": ("b", REQUIRED),
    "chdir": ("D", REQUIRED), "cluster-constraint": ("", REQUIRED), "clusters": ("M", REQUIRED),
    "comment": ("", REQUIRED), "constraint": ("C", REQUIRED), "container": ("", REQUIRED),
    "container-id": ("", REQUIRED), "contiguous": ("", NONE), "core-spec": ("S", REQUIRED),
    "cores-per-socket": ("", REQUIRED), "cpu-freq": ("", REQUIRED), "cpus-per-gpu": ("", REQUIRED),
    "cpus-per-task": ("c", REQUIRED), "deadline": ("", REQUIRED), "delay-boot": ("", REQUIRED),
    "dependency": ("d", REQUIRED), "distribution": ("m", REQUIRED), "error": ("e", REQUIRED),
    "exclude": ("x", REQUIRED), "exclusive": ("", OPTIONAL), "export": ("", REQUIRED),
    "export-file": ("", REQUIRED), "extra": ("", REQUIRED), "extra-node-info": ("B", REQUIRED),
    "get-user-env": ("", OPTIONAL), "gid": ("", REQUIRED), "gpu-bind": ("", REQUIRED),
    "gpu-freq": ("", REQUIRED), "gpus": ("G", REQUIRED), "gpus-per-node": ("", REQUIRED),
    "gpus-per-socket": ("", REQUIRED), "gpus-per-task": ("", REQUIRED), "gres": ("", REQUIRED),
    "gres-flags": ("", REQUIRED), "help": ("h", NONE), "hint": ("", REQUIRED), "hold": ("H", NONE),
    "ignore-pbs": ("", NONE), "immediate": ("I", NONE), "input": ("i", REQUIRED),
    "job-name": ("J", REQUIRED), "kill-on-invalid-dep": ("", REQUIRED), "licenses": ("L", REQUIRED),
    "mail-type": ("", REQUIRED), "mail-user": ("", REQUIRED), "mcs-label": ("", REQUIRED),
    "mem": ("", REQUIRED), "mem-bind": ("", REQUIRED), "mem-per-cpu": ("", REQUIRED),
    "mem-per-gpu": ("", REQUIRED), "mincpus": ("", REQUIRED), "network": ("", REQUIRED),
    "nice": ("", OPTIONAL), "no-kill": ("k", OPTIONAL), "no-requeue": ("", NONE),
    "nodefile": ("F", REQUIRED), "nodelist": ("w", REQUIRED), "nodes": ("N", REQUIRED),
    "ntasks": ("n", REQUIRED), "ntasks-per-core": ("", REQUIRED), "ntasks-per-gpu": ("", REQUIRED),
    "ntasks-per-node": ("", REQUIRED), "ntasks-per-socket": ("", REQUIRED), "oom-kill-step": ("", OPTIONAL),
    "open-mode": ("", REQUIRED), "output": ("o", REQUIRED), "overcommit": ("O", NONE),
    "oversubscribe": ("s", NONE), "parsable": ("", NONE), "partition": ("p", REQUIRED),
    "power": ("", REQUIRED), "prefer": ("", REQUIRED), "priority": ("", REQUIRED), "profile": ("", REQUIRED),
    "propagate": ("", OPTIONAL), "qos": ("q", REQUIRED), "quiet": ("Q", NONE), "reboot": ("", NONE),
    "requeue": ("", NONE), "reservation": ("", REQUIRED), "resv-ports": ("", OPTIONAL),
    "segment": ("", REQUIRED), "signal": ("", REQUIRED), "sockets-per-node": ("", REQUIRED),
    "spread-job": ("", NONE), "switches": ("", REQUIRED), "test-only": ("", NONE),
    "thread-spec": ("", REQUIRED), "threads-per-core": ("", REQUIRED), "time": ("t", REQUIRED),
    "time-min": ("", REQUIRED), "tmp": ("", REQUIRED), "tres-bind": ("", REQUIRED),
    "tres-per-task": ("", REQUIRED), "uid": ("", REQUIRED), "usage": ("", NONE),
    "use-min-nodes": ("", NONE), "verbose": ("v", NONE), "version": ("V", NONE), "wait": ("W", NONE),
    "wait-all-nodes": ("", REQUIRED), "wckey": ("", REQUIRED), "wrap": ("", REQUIRED),
}
SHORT_OPTIONS = {short: long for long, (short, _) in SBATCH_OPTIONS.items() if short}

# Options a pod may not set, each with the reason given back to the user.
FORBIDDEN = {
    "wrap": "the plugin submits its own job script",
    "output": "the job's output file is the plugin's job.out (container logs depend on it)",
    "error": "the job's stderr goes to the plugin's job.out",
    "job-name": "the job name is the pod UID",
    "array": "one pod is one job; job arrays are not supported",
    "wait": "sbatch would block the create request until the job ends",
    "test-only": "no job would be submitted",
    "help": "not a job option", "usage": "not a job option", "version": "not a job option",
}

# Options that mean the same resource; a higher layer setting any of them replaces the whole group.
GROUPS = {
    "cpu": ("cpus-per-task", "cpus-per-gpu"),
    "memory": ("mem", "mem-per-cpu", "mem-per-gpu"),
    "gpu": ("gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task"),  # + gres entries named gpu
    "uid": ("uid",),
}


class DirectiveError(ValueError):
    """A flag that cannot become a `#SBATCH` line; the message names it and where it came from."""


@dataclass(frozen=True)
class Directive:
    name: str  # canonical long name, without dashes
    value: str | None = None

    def render(self) -> str:
        """The `#SBATCH` line, escaped for sbatch's own word splitter."""
        token = f"--{self.name}" if self.value is None else f"--{self.name}={self.value}"
        return "#SBATCH " + escape_sbatch_word(token)


def escape_sbatch_word(word: str) -> str:
    """The word as sbatch's `#SBATCH` reader reads it back. Outside quotes that reader ends a word
    at any blank (a backslash does not protect it), so words with blanks, quotes, `#` or
    backslashes are double-quoted, with `\\` before `"` and `\\` inside."""
    check_value(word, word)
    if _PLAIN_WORD.match(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_value(value: str, what: str) -> None:
    bad = [c for c in value if ord(c) < 0x20 or c == "\x7f"]
    if bad:
        raise DirectiveError(f"{what!r}: control character {bad[0]!r} (e.g. a newline) cannot be written on an #SBATCH line")
    if "packjob" in value.lower():
        raise DirectiveError(f"{what!r}: sbatch blanks the word 'packjob' on #SBATCH lines")


def parse_flags(text: str, source: str) -> list[Directive]:
    """Shell words → directives. Each word must be an option, or the value of the option before it
    that takes one. `source` (an annotation or flavor name) is quoted in errors."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise DirectiveError(f"{source}: cannot split {text!r} into words: {e}") from None
    return parse_words(words, source)


def parse_words(words: Sequence[str], source: str) -> list[Directive]:
    out: list[Directive] = []
    i = 0
    while i < len(words):
        word = words[i]
        where = f"{source}: {word!r}"
        check_value(word, f"{source}: {word}")
        if word in ("-", "--") or not word.startswith("-"):
            raise DirectiveError(f"{where} is not an sbatch option (options start with '-'; a value belongs right after its option)")
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            spec = SBATCH_OPTIONS.get(name)
            if spec is None:
                if not eq and i + 1 < len(words) and not words[i + 1].startswith("-"):
                    raise DirectiveError(f"{where}: unknown option; write an unknown option's value as --{name}=VALUE")
                out.append(Directive(name, value if eq else None))
                i += 1
                continue
            arg = spec[1]
        else:
            letter = word[1]
            name = SHORT_OPTIONS.get(letter, "")
            if not name:
                raise DirectiveError(f"{where}: unknown short option -{letter}")
            arg = SBATCH_OPTIONS[name][1]
            rest = word[2:]
            if arg == NONE and rest:
                raise DirectiveError(f"{where}: -{letter} takes no value (write combined short options separately)")
            eq, value = ("=", rest) if rest and arg != NONE else ("", "")
            if arg == OPTIONAL and rest:
                eq, value = "=", rest
        if name in FORBIDDEN:
            raise DirectiveError(f"{where}: --{name} is not allowed: {FORBIDDEN[name]}")
        if arg == NONE and eq:
            raise DirectiveError(f"{where}: --{name} takes no value")
        if arg == REQUIRED and not eq:
            if i + 1 >= len(words):
                raise DirectiveError(f"{where}: --{name} needs a value")
            value = words[i + 1]
            check_value(value, f"{source}: {value}")
            i += 1
        out.append(Directive(name, value if (eq or arg == REQUIRED) else None))
        i += 1
    return out


# --- resources -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodResources:
    """What the pod's containers ask for, as running at the same time needs it."""

    cpu_millis: int | None  # None: no container says
    memory_bytes: int | None
    gpus: int


def _container_value(c: Container, resource: str, parse: Callable[[str], int]) -> int | None:
    raw = c.limits.get(resource, c.requests.get(resource))
    if raw is None:
        return None
    try:
        return parse(raw)
    except QuantityError as e:
        which = "limits" if resource in c.limits else "requests"
        raise DirectiveError(f"{c.where}.resources.{which}.{resource}: {e}") from None


def _concurrent(inits: Iterable[int | None], regular: Iterable[int | None]) -> int | None:
    """Init containers run one at a time, then the regular ones all together: the job needs the
    larger of the biggest init container and the sum of the regular ones."""
    ivals = [v for v in inits if v is not None]
    rvals = [v for v in regular if v is not None]
    if not ivals and not rvals:
        return None
    return max([sum(rvals)] + ivals)


def pod_resources(pod: Pod) -> PodResources:
    """Limits, falling back to requests, of the containers that run at the same time."""
    cpu = _concurrent((_container_value(c, "cpu", cpu_millis) for c in pod.init_containers),
                      (_container_value(c, "cpu", cpu_millis) for c in pod.containers))
    mem = _concurrent((_container_value(c, "memory", memory_bytes) for c in pod.init_containers),
                      (_container_value(c, "memory", memory_bytes) for c in pod.containers))

    def gpus(c: Container) -> int | None:
        values = [_container_value(c, r, cpu_millis) for r in GPU_RESOURCES]
        found = [v for v in values if v is not None]
        return math.ceil(sum(found) / 1000) if found else None

    gpu = _concurrent((gpus(c) for c in pod.init_containers), (gpus(c) for c in pod.containers))
    return PodResources(cpu or None, mem or None, gpu or 0)


def cpus(millis: int) -> str:
    return str(max(1, math.ceil(millis / 1000)))


def mebibytes(n_bytes: int) -> str:
    return f"{max(1, math.ceil(n_bytes / MIB))}M"


# --- flavors -------------------------------------------------------------------------------------


def resolve_flavor(pod: Pod, config: SlurmConfig, gpus: int) -> Flavor | None:
    """Annotation `slurm-job.vk.io/flavor`, else a GPU flavor matching the pod's GPU count, else
    DefaultFlavor (the Go plugin's order). An unknown flavor in the annotation is an error."""
    flavors = config.flavors
    wanted = pod.annotations.get(FLAVOR_ANNOTATION, "")
    if wanted:
        if wanted not in flavors:
            raise DirectiveError(f"annotation {FLAVOR_ANNOTATION}: unknown flavor {wanted!r} (known: {', '.join(flavors) or 'none'})")
        return flavors[wanted]
    if gpus:
        gpu_flavors = [f for f in flavors.values() if "gpu" in f.name.lower() or any("gpu" in s for s in f.slurm_flags)]
        exact = [f for f in gpu_flavors if any(s in (f"--gres=gpu:{gpus}", f"--gpus={gpus}") for s in f.slurm_flags)]
        if exact or gpu_flavors:
            return (exact or gpu_flavors)[0]
    return flavors.get(config.default_flavor) if config.default_flavor else None


# --- merging -------------------------------------------------------------------------------------


def _gres_entries(value: str) -> list[str]:
    return [e for e in value.split(",") if e]


def _gres_type(entry: str) -> str:
    return entry.split(":", 1)[0]


def _group_of(d: Directive) -> set[str]:
    groups = {g for g, names in GROUPS.items() if d.name in names}
    if d.name == "gres" and d.value and any(_gres_type(e) == "gpu" for e in _gres_entries(d.value)):
        groups.add("gpu")
    return groups


def merge_layers(layers: Sequence[Sequence[Directive]]) -> list[Directive]:
    """Apply the precedence described in the module docstring."""
    owner: dict[str, int] = {}  # group → highest layer that sets it
    for level, layer in enumerate(layers):
        for d in layer:
            for g in _group_of(d):
                owner[g] = level
    merged: dict[str, Directive] = {}
    for level, layer in enumerate(layers):
        for d in layer:
            if d.name == "gres" and d.value is not None:
                entries = [e for e in _gres_entries(d.value) if not (_gres_type(e) == "gpu" and owner.get("gpu", level) > level)]
                previous = merged.get("gres")
                by_type = {_gres_type(e): e for e in _gres_entries(previous.value or "")} if previous else {}
                by_type.update({_gres_type(e): e for e in entries})
                merged.pop("gres", None)
                if by_type:
                    merged["gres"] = Directive("gres", ",".join(by_type.values()))
                continue
            if any(owner.get(g, level) > level for g in _group_of(d)):
                continue
            merged.pop(d.name, None)  # last wins, at the position of the last occurrence
            merged[d.name] = d
    return list(merged.values())


@dataclass(frozen=True)
class JobDirectives:
    directives: tuple[Directive, ...]
    flavor: str | None
    resources: PodResources

    def lines(self) -> list[str]:
        return [d.render() for d in self.directives]


def build_directives(pod: Pod, config: SlurmConfig) -> JobDirectives:
    """Everything between `--output` and the script body. Raises DirectiveError naming the culprit."""
    res = pod_resources(pod)
    flavor = resolve_flavor(pod, config, res.gpus)

    defaults: list[Directive] = [Directive("cpus-per-task", cpus(config.default_cpu_millis))]
    if config.default_memory_bytes is not None:
        defaults.append(Directive("mem", mebibytes(config.default_memory_bytes)))
    if config.default_uid is not None:
        defaults.append(Directive("uid", str(config.default_uid)))

    flavor_layer: list[Directive] = []
    if flavor is not None:
        if flavor.cpu_default:
            flavor_layer.append(Directive("cpus-per-task", str(flavor.cpu_default)))
        if flavor.memory_default_bytes:
            flavor_layer.append(Directive("mem", mebibytes(flavor.memory_default_bytes)))
        flavor_layer += parse_words(_flavor_words(flavor), f"flavor {flavor.name}")
        if flavor.uid is not None:
            flavor_layer.append(Directive("uid", str(flavor.uid)))

    pod_layer: list[Directive] = []
    if res.cpu_millis is not None:
        pod_layer.append(Directive("cpus-per-task", cpus(res.cpu_millis)))
    if res.memory_bytes is not None:
        pod_layer.append(Directive("mem", mebibytes(res.memory_bytes)))
    if res.gpus:
        pod_layer.append(Directive("gres", f"gpu:{_gpu_type(flavor_layer)}{res.gpus}"))
    if pod.run_as_user is not None:
        pod_layer.append(Directive("uid", str(pod.run_as_user)))

    annotation_layer: list[Directive] = []
    for key in FLAGS_ANNOTATIONS:
        if key in pod.annotations:
            annotation_layer += parse_flags(pod.annotations[key], f"annotation {key}")

    merged = merge_layers([defaults, flavor_layer, pod_layer, annotation_layer])
    return JobDirectives(tuple(merged), flavor.name if flavor else None, res)


def _gpu_type(layer: Sequence[Directive]) -> str:
    """A flavor's GPU model (`--gres=gpu:a100:2` → `a100:`), kept when the pod sets the count."""
    for d in layer:
        if d.name == "gres" and d.value:
            for entry in _gres_entries(d.value):
                parts = entry.split(":")
                if parts[0] == "gpu" and len(parts) == 3:
                    return parts[1] + ":"
    return ""


def _flavor_words(flavor: Flavor) -> list[str]:
    """Flavor flags are list items, each possibly `-p gpu` (two words) as the Go plugin allows."""
    words: list[str] = []
    for flag in flavor.slurm_flags:
        try:
            words += shlex.split(flag)
        except ValueError as e:
            raise DirectiveError(f"flavor {flavor.name}: cannot split {flag!r}: {e}") from None
    return words


def header_lines(uid: str, output: str, directives: Iterable[Directive]) -> list[str]:
    """The fixed first directives, then the merged ones."""
    head = [Directive("job-name", uid), Directive("output", output)]
    return [d.render() for d in head] + [d.render() for d in directives]


def as_mapping(directives: Iterable[Directive]) -> Mapping[str, str | None]:
    return {d.name: d.value for d in directives}

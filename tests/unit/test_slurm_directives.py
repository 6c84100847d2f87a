"""#SBATCH directives: annotation parsing and validation, resources, flavors, precedence, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from vnode.plugins.slurm.config import parse_config
from vnode.plugins.slurm.directives import (
    Directive,
    DirectiveError,
    build_directives,
    escape_sbatch_word,
    merge_layers,
    parse_flags,
    pod_resources,
)
from vnode.plugins.slurm.podspec import parse_pod


def make_pod(containers: list[dict[str, Any]] | None = None, init: list[dict[str, Any]] | None = None,
             annotations: dict[str, str] | None = None, run_as: int | None = None) -> Any:
    spec: dict[str, Any] = {"containers": containers or [{"name": "main", "image": "busybox"}]}
    if init:
        spec["initContainers"] = init
    if run_as is not None:
        spec["securityContext"] = {"runAsUser": run_as}
    return parse_pod({"metadata": {"name": "p", "namespace": "ns", "uid": "11111111-2222-3333-4444-555555555555",
                                   "annotations": annotations or {}}, "spec": spec})


def ctr(name: str, limits: dict[str, str] | None = None, requests: dict[str, str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return {"name": name, "image": "busybox", "resources": resources}


def lines_for(pod: Any, config_text: str = "") -> list[str]:
    config, _ = parse_config(config_text, {})
    return build_directives(pod, config).lines()


# --- parsing -------------------------------------------------------------------------------------


def test_short_option_with_separate_value_stays_one_directive() -> None:
    assert parse_flags("-p geant4 -t 10", "a") == [Directive("partition", "geant4"), Directive("time", "10")]


def test_short_option_with_attached_value() -> None:
    assert parse_flags("-pgpu -c4", "a") == [Directive("partition", "gpu"), Directive("cpus-per-task", "4")]


def test_long_options_with_equals_or_separate_value() -> None:
    assert parse_flags("--time=01:00:00 --account proj --exclusive", "a") == [
        Directive("time", "01:00:00"), Directive("account", "proj"), Directive("exclusive", None)]


def test_quoted_values_keep_their_spaces() -> None:
    assert parse_flags("--comment='two words' --constraint=\"a&b\"", "a") == [
        Directive("comment", "two words"), Directive("constraint", "a&b")]


def test_unknown_long_option_passes_with_equals() -> None:
    assert parse_flags("--tres-future=x=1", "a") == [Directive("tres-future", "x=1")]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ("partition=gpu", "not an sbatch option"),
        ("-p gpu extra", "'extra' is not an sbatch option"),
        ("--wrap='rm -rf /'", "--wrap is not allowed"),
        ("-o /tmp/x", "--output is not allowed"),
        ("--error=/tmp/e", "--error is not allowed"),
        ("-J name", "--job-name is not allowed"),
        ("--array=1-10", "--array is not allowed"),
        ("-W", "--wait is not allowed"),
        ("--test-only", "--test-only is not allowed"),
        ("-Z", "unknown short option -Z"),
        ("--partition", "needs a value"),
        ("--hold=yes", "takes no value"),
        ("-Hk", "takes no value"),
        ("--brand-new value", "--brand-new=VALUE"),
        ("--comment='a\nb'", "control character"),
        ("--comment='a\x00b'", "control character"),
        ("--comment=packjob", "packjob"),
        ("--comment='unclosed", "cannot split"),
        ("-", "not an sbatch option"),
    ],
)
def test_bad_flags_are_rejected_naming_them(flags: str, needle: str) -> None:
    with pytest.raises(DirectiveError) as info:
        parse_flags(flags, "annotation slurm-job.vk.io/flags")
    assert needle in str(info.value)
    assert "annotation slurm-job.vk.io/flags" in str(info.value)


# --- rendering -----------------------------------------------------------------------------------


def test_plain_words_render_unquoted() -> None:
    assert Directive("partition", "debug").render() == "#SBATCH --partition=debug"
    assert Directive("exclusive").render() == "#SBATCH --exclusive"


def test_words_with_blanks_quotes_and_hashes_are_double_quoted_for_sbatch() -> None:
    assert escape_sbatch_word('--comment=a b # c"q\'s\\x') == '"--comment=a b # c\\"q\'s\\\\x"'


def read_back(line: str) -> list[str]:
    """sbatch's #SBATCH word reader (src/sbatch/opt.c `_get_argument`), for checking our escaping."""
    assert line.startswith("#SBATCH")
    ptr, words = line[len("#SBATCH"):], []
    i = 0
    while True:
        while i < len(ptr) and ptr[i].isspace():
            i += 1
        if i >= len(ptr):
            return words
        word, quoted, q, escape = "", False, "", False
        while i < len(ptr) and (quoted or not ptr[i].isspace()):
            c = ptr[i]
            if escape:
                escape = False
            elif c == "\\":
                escape, i = True, i + 1
                continue
            elif quoted:
                if c == q:
                    quoted, i = False, i + 1
                    continue
            elif c in "\"'":
                quoted, q, i = True, c, i + 1
                continue
            elif c == "#":
                return words + ([word] if word else [])
            word += c
            i += 1
        words.append(word)


@pytest.mark.parametrize("value", ["plain", "two words", "it's", 'say "hi"', "back\\slash", "#hash", "tab-less é ü",
                                   "$HOME `x`", "a # b"])
def test_rendered_directive_reads_back_as_one_word(value: str) -> None:
    assert read_back(Directive("comment", value).render()) == [f"--comment={value}"]


# --- resources -----------------------------------------------------------------------------------


def test_regular_containers_are_summed_init_containers_take_the_max() -> None:
    pod = make_pod([ctr("a", {"cpu": "1500m", "memory": "1Gi"}), ctr("b", {"cpu": "1", "memory": "512Mi"})],
                   init=[ctr("i", {"cpu": "4", "memory": "256Mi"})])
    res = pod_resources(pod)
    assert res.cpu_millis == 4000  # max(1.5 + 1, 4)
    assert res.memory_bytes == 1536 * 2**20  # max(1Gi + 512Mi, 256Mi)


def test_limits_fall_back_to_requests() -> None:
    pod = make_pod([ctr("a", requests={"cpu": "2", "memory": "3Gi"}), ctr("b", limits={"cpu": "500m"}, requests={"cpu": "100m"})])
    res = pod_resources(pod)
    assert res.cpu_millis == 2500 and res.memory_bytes == 3 * 2**30


def test_computed_resources_become_directives() -> None:
    lines = lines_for(make_pod([ctr("a", {"cpu": "1500m", "memory": "1000Mi"}), ctr("b", {"cpu": "1"})]))
    assert "#SBATCH --cpus-per-task=3" in lines
    assert "#SBATCH --mem=1000M" in lines


def test_pods_without_resources_get_one_cpu_and_one_gib_not_one_megabyte() -> None:
    lines = lines_for(make_pod())
    assert lines == ["#SBATCH --cpus-per-task=1", "#SBATCH --mem=1024M"]


def test_default_memory_can_be_left_to_slurm() -> None:
    lines = lines_for(make_pod(), "DefaultMemory: ''\nDefaultCPU: 2\n")
    assert lines == ["#SBATCH --cpus-per-task=2"]


def test_gpu_limits_become_gres() -> None:
    pod = make_pod([ctr("a", {"nvidia.com/gpu": "2"}), ctr("b", {"amd.com/gpu": "1"})])
    assert "#SBATCH --gres=gpu:3" in lines_for(pod)


def test_annotation_wins_for_the_resources_it_names() -> None:
    pod = make_pod([ctr("a", {"cpu": "2", "memory": "2Gi"})],
                   annotations={"slurm-job.vk.io/flags": "--mem-per-cpu=4G -p debug"})
    lines = lines_for(pod)
    assert "#SBATCH --mem-per-cpu=4G" in lines
    assert not any(line.startswith("#SBATCH --mem=") for line in lines)  # sbatch rejects --mem with --mem-per-cpu
    assert "#SBATCH --cpus-per-task=2" in lines  # not named by the annotation: computed value stays


def test_annotation_gpu_option_replaces_the_computed_gres() -> None:
    pod = make_pod([ctr("a", {"nvidia.com/gpu": "2"})], annotations={"slurm-job.vk.io/flags": "--gpus=4"})
    lines = lines_for(pod)
    assert "#SBATCH --gpus=4" in lines and not any("gres" in line for line in lines)


def test_annotation_gres_without_gpu_is_merged_with_computed_gpus() -> None:
    pod = make_pod([ctr("a", {"nvidia.com/gpu": "2"})], annotations={"slurm-job.vk.io/flags": "--gres=nic:1"})
    assert "#SBATCH --gres=gpu:2,nic:1" in lines_for(pod)


def test_last_occurrence_wins_and_short_and_long_are_one_option() -> None:
    pod = make_pod(annotations={"slurm-job.vk.io/flags": "-p a --time=5 --partition=b -t 10"})
    lines = lines_for(pod)
    assert lines.count("#SBATCH --partition=b") == 1 and "#SBATCH --partition=a" not in lines
    assert "#SBATCH --time=10" in lines


def test_oscar_and_legacy_annotations_are_read_and_vk_io_wins() -> None:
    pod = make_pod(annotations={"slurm-job.knoc.io/flags": "-p legacy --qos=low", "job.vk.io/flags": "-p oscar",
                                "slurm-job.vk.io/flags": "-p main"})
    lines = lines_for(pod)
    assert "#SBATCH --partition=main" in lines and "#SBATCH --qos=low" in lines


def test_bad_annotation_fails_naming_the_annotation() -> None:
    pod = make_pod(annotations={"slurm-job.vk.io/flags": "--output=/etc/passwd"})
    with pytest.raises(DirectiveError, match="slurm-job.vk.io/flags"):
        lines_for(pod)


def test_bad_resource_quantity_names_the_field() -> None:
    pod = make_pod([ctr("a", {"cpu": "lots"})])
    with pytest.raises(DirectiveError, match=r"spec.containers\[0\].resources.limits.cpu"):
        lines_for(pod)


# --- flavors and uid -----------------------------------------------------------------------------

FLAVORS = """
Flavors:
  small:
    CPUDefault: 2
    MemoryDefault: 4G
    SlurmFlags: ["-p short", "--qos=normal"]
  gpu:
    CPUDefault: 8
    MemoryDefault: 32000M
    UID: 2000
    SlurmFlags: ["--gres=gpu:a100:1", "-p gpu"]
DefaultFlavor: small
DefaultUID: 1000
"""


def test_default_flavor_supplies_defaults_and_flags() -> None:
    lines = lines_for(make_pod(), FLAVORS)
    assert sorted(lines) == sorted(["#SBATCH --cpus-per-task=2", "#SBATCH --mem=4096M", "#SBATCH --uid=1000",
                     "#SBATCH --partition=short", "#SBATCH --qos=normal"])


def test_flavor_annotation_selects_a_flavor_and_pod_resources_still_win() -> None:
    pod = make_pod([ctr("a", {"cpu": "3"})], annotations={"slurm-job.vk.io/flavor": "gpu"})
    lines = lines_for(pod, FLAVORS)
    assert "#SBATCH --cpus-per-task=3" in lines
    assert "#SBATCH --mem=32000M" in lines
    assert "#SBATCH --uid=2000" in lines and "#SBATCH --partition=gpu" in lines


def test_gpu_pods_pick_a_gpu_flavor_and_keep_its_gpu_model() -> None:
    pod = make_pod([ctr("a", {"nvidia.com/gpu": "2"})])
    lines = lines_for(pod, FLAVORS)
    assert "#SBATCH --gres=gpu:a100:2" in lines and "#SBATCH --partition=gpu" in lines


def test_unknown_flavor_annotation_is_an_error() -> None:
    pod = make_pod(annotations={"slurm-job.vk.io/flavor": "huge"})
    with pytest.raises(DirectiveError, match="unknown flavor 'huge'"):
        lines_for(pod, FLAVORS)


def test_run_as_user_beats_flavor_and_default_uid() -> None:
    assert "#SBATCH --uid=4242" in lines_for(make_pod(run_as=4242), FLAVORS)


def test_merge_layers_keeps_group_members_of_the_highest_layer_only() -> None:
    merged = merge_layers([[Directive("mem", "1G"), Directive("cpus-per-task", "1")],
                           [Directive("mem-per-gpu", "8G")]])
    assert merged == [Directive("cpus-per-task", "1"), Directive("mem-per-gpu", "8G")]

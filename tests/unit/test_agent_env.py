"""Environment resolution follows the kubelet: envFrom then env, $(VAR) expansion, valueFrom,
optional references, and values that survive any character."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnode.node.env import (
    DownwardValues,
    InvalidPodSpec,
    MissingReference,
    References,
    expand,
    expand_command,
    field_ref_value,
    format_map,
    go_quote,
    resolve_env,
    secret_text,
    valid_env_name,
)

DOWN = DownwardValues(host_ip="10.0.0.5", pod_ip="127.0.0.1",
                      node_allocatable={"cpu": "100", "memory": "128Gi"})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pod(containers: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "x"}, "annotations": {"team": "hpc"}, **meta},
            "spec": {"nodeName": "vn", "serviceAccountName": "sa", "containers": containers}}


def env_of(p: dict[str, Any], refs: References | None = None, **kw: Any) -> dict[str, str]:
    result = resolve_env(p, p["spec"]["containers"][0], refs or References(), DOWN, **kw)  # type: ignore[arg-type]
    return {e["name"]: e["value"] for e in result.env}


# -- $(VAR) expansion -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)", "1"),
    ("pre-$(A)-post", "pre-1-post"),
    ("$$(A)", "$(A)"),           # escaped
    ("$$$(A)", "$1"),
    ("$(MISSING)", "$(MISSING)"),  # unknown references stay as written
    ("$(", "$("),                # incomplete
    ("x$(A", "x$(A"),
    ("$()", "$()"),
    ("$", "$"),
    ("a$b", "a$b"),              # a lone $ is literal
    ("$(A)$(B)", "1two"),
    ("`date` $(date) \n 'q' \"d\"", "`date` $(date) \n 'q' \"d\""),
    ("é$(A)ü", "é1ü"),
])
def test_expansion_follows_the_kubelet(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}.get) == expected


@given(st.text())
def test_text_without_dollar_is_never_changed(text: str) -> None:
    clean = text.replace("$", "")
    assert expand(clean, {"A": "1"}.get) == clean


@given(st.text(), st.dictionaries(st.text(min_size=1), st.text()))
def test_expansion_never_raises_and_unknown_refs_survive(text: str, values: dict[str, str]) -> None:
    result = expand(text, values.get)
    if not values:
        # With nothing to substitute only "$$" collapses.
        assert result.replace("$", "") == text.replace("$", "")


# -- env and envFrom --------------------------------------------------------------------------

def test_env_values_with_quotes_backticks_newlines_and_non_ascii_are_kept_exactly() -> None:
    value = "it's \"quoted\"\n`backtick` $(not-a-var) \\ \t ünïcødé 🚀 ; rm -rf / &&"
    p = pod([{"name": "c", "env": [{"name": "V", "value": value}]}])
    assert env_of(p)["V"] == value


def test_later_env_entries_see_earlier_ones() -> None:
    p = pod([{"name": "c", "env": [{"name": "A", "value": "1"},
                                   {"name": "B", "value": "$(A)-$(C)"},
                                   {"name": "C", "value": "3"}]}])
    assert env_of(p) == {"A": "1", "B": "1-$(C)", "C": "3"}


def test_envfrom_comes_first_and_env_overrides_it() -> None:
    refs = References(configmaps={"cm": {"data": {"A": "from-cm", "B": "b"}}},
                      secrets={"s": {"data": {"S": b64("secret value")}}})
    p = pod([{"name": "c",
              "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "P_"}],
              "env": [{"name": "A", "value": "explicit $(B)"}]}])
    assert env_of(p, refs) == {"A": "explicit b", "B": "b", "P_S": "secret value"}


def test_envfrom_keys_that_are_not_variable_names_are_reported_and_skipped() -> None:
    refs = References(configmaps={"cm": {"data": {"ok": "1", "bad=key": "2", "tab\tkey": "3"}}})
    p = pod([{"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]}])
    result = resolve_env(p, p["spec"]["containers"][0], refs, DOWN)  # type: ignore[arg-type]
    assert [e["name"] for e in result.env] == ["ok"]
    assert sorted(result.invalid_keys) == ["bad=key", "tab\tkey"]


def test_missing_configmap_for_envfrom_is_a_missing_reference() -> None:
    p = pod([{"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]}])
    with pytest.raises(MissingReference) as caught:
        env_of(p, References(configmaps={"absent": None}))
    assert caught.value.kind == "ConfigMap" and caught.value.name == "absent"
    assert caught.value.context.startswith("container c")


def test_optional_references_that_are_missing_are_skipped() -> None:
    p = pod([{"name": "c",
              "envFrom": [{"secretRef": {"name": "nope", "optional": True}}],
              "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k",
                                                                        "optional": True}}},
                      {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "gone",
                                                                     "optional": True}}}]}])
    refs = References(configmaps={"cm": None}, secrets={"nope": None, "s": {"data": {}}})
    assert env_of(p, refs) == {}


def test_missing_key_in_existing_configmap_names_the_key() -> None:
    p = pod([{"name": "c", "env": [{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "cm", "key": "k"}}}]}])
    with pytest.raises(MissingReference) as caught:
        env_of(p, References(configmaps={"cm": {"data": {"other": "x"}}}))
    assert caught.value.key == "k"
    assert "couldn't find key k" in str(caught.value)


def test_value_from_refs_are_not_expanded() -> None:
    refs = References(configmaps={"cm": {"data": {"k": "$(A)"}}},
                      secrets={"s": {"data": {"k": b64("$(A)")}}})
    p = pod([{"name": "c", "env": [
        {"name": "A", "value": "1"},
        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}])
    assert env_of(p, refs) == {"A": "1", "CM": "$(A)", "S": "$(A)"}


def test_secret_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    assert secret_text(base64.b64encode(b"ok\xff").decode()) == "ok\ufffd"


def test_field_refs_resolve_to_pod_and_node_values() -> None:
    p = pod([{"name": "c", "env": [
        {"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}} for n, f in [
            ("NAME", "metadata.name"), ("NS", "metadata.namespace"), ("UID", "metadata.uid"),
            ("NODE", "spec.nodeName"), ("SA", "spec.serviceAccountName"),
            ("HOST", "status.hostIP"), ("IP", "status.podIP"), ("IPS", "status.podIPs"),
            ("APP", "metadata.labels['app']"), ("TEAM", "metadata.annotations['team']"),
            ("NONE", "metadata.labels['absent']")]]}])
    assert env_of(p) == {"NAME": "p", "NS": "ns", "UID": "u-1", "NODE": "vn", "SA": "sa",
                         "HOST": "10.0.0.5", "IP": "127.0.0.1", "IPS": "127.0.0.1",
                         "APP": "x", "TEAM": "hpc", "NONE": ""}


def test_unknown_field_path_is_an_invalid_pod_spec() -> None:
    p = pod([{"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}])
    with pytest.raises(InvalidPodSpec, match="spec.hostname"):
        env_of(p)


def test_whole_label_maps_are_only_for_volumes() -> None:
    p = pod([])
    with pytest.raises(InvalidPodSpec):
        field_ref_value(p, "metadata.labels", DOWN)  # type: ignore[arg-type]
    assert field_ref_value(p, "metadata.labels", DOWN, volume=True) == 'app="x"'  # type: ignore[arg-type]


@pytest.mark.parametrize(("resource", "divisor", "resources", "expected"), [
    ("limits.cpu", "", {"limits": {"cpu": "500m"}}, "1"),          # rounded up, like the kubelet
    ("limits.cpu", "1m", {"limits": {"cpu": "500m"}}, "500"),
    ("requests.cpu", "", {"requests": {"cpu": "2"}}, "2"),
    ("limits.memory", "1Mi", {"limits": {"memory": "128Mi"}}, "128"),
    ("limits.memory", "", {"limits": {"memory": "1Ki"}}, "1024"),
    ("limits.cpu", "", {}, "100"),                                 # no limit → node allocatable
    ("requests.memory", "", {}, "0"),
])
def test_resource_field_refs_use_the_kubelet_rounding(resource: str, divisor: str,
                                                      resources: dict[str, Any], expected: str) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    p = pod([{"name": "c", "resources": resources,
              "env": [{"name": "R", "valueFrom": {"resourceFieldRef": ref}}]}])
    assert env_of(p) == {"R": expected}


def test_resource_field_ref_to_another_container() -> None:
    p = pod([{"name": "c", "env": [{"name": "R", "valueFrom": {"resourceFieldRef": {
        "containerName": "side", "resource": "limits.cpu", "divisor": "1m"}}}]},
        {"name": "side", "resources": {"limits": {"cpu": "250m"}}}])
    assert env_of(p) == {"R": "250"}


def test_extra_variables_never_replace_the_pods_own() -> None:
    p = pod([{"name": "c", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"},
                                   {"name": "X", "value": "$(KUBERNETES_SERVICE_PORT)"}]}])
    env = env_of(p, extra={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"})
    assert env["KUBERNETES_SERVICE_HOST"] == "mine"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"


def test_command_and_args_are_expanded_from_the_resolved_env() -> None:
    container = {"name": "c", "command": ["sh", "-c", "echo $(GREETING) $$(HOME)"],
                 "args": ["$(NAME)", "$(UNKNOWN)"]}
    out = expand_command(container, [{"name": "GREETING", "value": "hi there"},  # type: ignore[arg-type]
                                     {"name": "NAME", "value": "x"}])
    assert out["command"] == ["sh", "-c", "echo hi there $(HOME)"]
    assert out["args"] == ["x", "$(UNKNOWN)"]
    assert container["command"][2] == "echo $(GREETING) $$(HOME)"  # the original is untouched


@pytest.mark.parametrize(("name", "ok"), [("A", True), ("a.b-c", True), ("1X", True), ("", False),
                                          ("A=B", False), ("é", False), ("tab\t", False)])
def test_env_variable_names_follow_relaxed_validation(name: str, ok: bool) -> None:
    assert valid_env_name(name) is ok


# -- downward API formatting (Go's %q) ---------------------------------------------------------

@pytest.mark.parametrize(("text", "quoted"), [
    ("plain", '"plain"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
    ("\x00\x7f", '"\\x00\\x7f"'),
    ("é", '"é"'),
    ("\u200b", '"\\u200b"'),
])
def test_go_quote_matches_strconv_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_label_files_are_sorted_key_quoted_value_lines() -> None:
    assert format_map({"b": "2", "a": 'x"y'}) == 'a="x\\"y"\nb="2"'

"""The wire models decode what interLink's Go code sends and encode the bytes Go would write.

Golden files: ``golden/plugin_client/inputs/<Type>.<case>.json`` were decoded and re-encoded by Go's encoding/json
with interLink's struct tags and k8s.io/api v0.35.4 (``golden/plugin_client/gen/main.go``); the result is in
``golden/plugin_client/outputs/``, or ``ERROR: ...`` where Go refuses the input.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin_client import gojson
from plugin_client.errors import WireFormatError
from plugin_client.models import (
    Accelerator,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateStruct,
    ExecRequest,
    LogOpts,
    LogStruct,
    PingResources,
    PingResponse,
    PodCreateRequests,
    PodStatus,
    RetrievedContainer,
    RetrievedPodData,
    Taint,
    decode,
    decode_list,
    encode,
    parse_json,
    pod_ref,
)

GOLDEN = Path(__file__).parent / "golden" / "plugin_client"
CASES = sorted(path.name for path in (GOLDEN / "inputs").glob("*.json"))

MODELS: dict[str, Any] = {
    "RetrievedPodData": RetrievedPodData,
    "RetrievedContainer": RetrievedContainer,
    "PodCreateRequests": PodCreateRequests,
    "PodStatus": PodStatus,
    "ContainerStatus": ContainerStatus,
    "CreateStruct": CreateStruct,
    "LogStruct": LogStruct,
    "PingResponse": PingResponse,
}


def decode_as(kind: str, data: bytes) -> Any:
    if kind == "PodStatusList":
        return decode_list(data, PodStatus)
    if kind == "Status":
        return parse_json(data)  # metav1.Status is plain JSON here; channel tests build it
    return decode(data, MODELS[kind])


def golden(name: str) -> bytes:
    return (GOLDEN / "outputs" / name).read_bytes()


def test_every_golden_input_has_a_go_output() -> None:
    assert len(CASES) >= 40
    for name in CASES:
        assert (GOLDEN / "outputs" / name).exists(), name


@pytest.mark.parametrize("name", CASES)
def test_decoding_then_encoding_matches_go_byte_for_byte(name: str) -> None:
    kind = name.split(".")[0]
    expected = golden(name)
    source = (GOLDEN / "inputs" / name).read_bytes()
    if expected.startswith(b"ERROR:"):
        with pytest.raises(WireFormatError):
            decode_as(kind, source)
    else:
        assert encode(decode_as(kind, source)) == expected


@pytest.mark.parametrize("name", [n for n in CASES if not golden(n).startswith(b"ERROR:")])
def test_go_output_survives_a_python_round_trip_unchanged(name: str) -> None:
    kind = name.split(".")[0]
    assert encode(decode_as(kind, golden(name))) == golden(name)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("PodStatusList.exit_code_string.json", "[0].containers[0].state.terminated.exitCode"),
        ("PodStatusList.exit_code_float.json", "[0].containers[0].state.terminated.exitCode"),
        ("PodStatusList.containers_object.json", "[0].containers"),
        ("ContainerStatus.ready_as_string.json", "ready"),
        ("ContainerStatus.bad_time.json", "state.running.startedAt"),
        ("ContainerStatus.exit_code_overflow.json", "state.terminated.exitCode"),
        ("CreateStruct.jid_as_number.json", "PodJID"),
        ("LogStruct.tail_as_string.json", "Opts.Tail"),
        ("LogStruct.since_time_not_rfc3339.json", "Opts.SinceTime"),
        ("PingResponse.available_as_int.json", "resources.accelerators[0].available"),
        ("RetrievedPodData.configmap_not_object.json", "container[0].configMaps[0]"),
        ("RetrievedPodData.container_as_object.json", "container"),
    ],
)
def test_wrong_types_are_rejected_with_the_field_path(name: str, path: str) -> None:
    with pytest.raises(WireFormatError) as caught:
        decode_as(name.split(".")[0], (GOLDEN / "inputs" / name).read_bytes())
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_exit_code_as_string_error_says_expected_int() -> None:
    with pytest.raises(WireFormatError, match=r"exitCode: expected int, got string"):
        decode_list(b'[{"containers":[{"state":{"terminated":{"exitCode":"3"}}}]}]', PodStatus)


def test_plugin_dialect_flattening_reproduces_what_interlinks_vk_sends() -> None:
    data = decode(golden("RetrievedPodData.from_interlink_api.json"), RetrievedPodData)
    request = PodCreateRequests.from_pod_data(data, job_script_url="http://builder:8080/build")
    assert encode(request) == golden("PodCreateRequests.from_vk.json")


def test_flattening_deduplicates_volume_objects_by_name_and_sends_null_for_none() -> None:
    cm = {"metadata": {"name": "shared"}, "data": {"k": "v"}}
    other = {"metadata": {"name": "only-b"}}
    data = RetrievedPodData(
        pod={"metadata": {"name": "p"}},
        containers=(
            RetrievedContainer(name="a", config_maps=(cm,)),
            RetrievedContainer(name="b", config_maps=(cm, other), secrets=()),
        ),
    )
    request = PodCreateRequests.from_pod_data(data)
    assert request.config_maps == (cm, other)
    wire = request.to_wire()
    assert wire["secrets"] is None and wire["projectedvolumesmaps"] is None
    assert list(wire) == [
        "pod",
        "configmaps",
        "secrets",
        "persistentvolumes",
        "projectedvolumesmaps",
        "jobscriptURL",
    ]


def test_empty_log_request_has_go_zero_since_time() -> None:
    request = LogStruct(namespace="ns", pod_uid="u", pod_name="p", container_name="c")
    assert encode(request) == (
        b'{"Namespace":"ns","PodUID":"u","PodName":"p","ContainerName":"c","Opts":{"Tail":0,'
        b'"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,'
        b'"SinceTime":"0001-01-01T00:00:00Z"}}'
    )


def test_log_since_time_keeps_offset_and_trims_fraction_like_rfc3339nano() -> None:
    plus_two = timezone(timedelta(hours=2))
    opts = LogOpts(since_time=datetime(2024, 5, 1, 10, 20, 30, 500000, tzinfo=plus_two))
    assert opts.to_wire()["SinceTime"] == "2024-05-01T10:20:30.5+02:00"
    naive = LogOpts(since_time=datetime(2024, 5, 1, 10, 20, 30))
    assert naive.to_wire()["SinceTime"] == "2024-05-01T10:20:30Z"


def test_container_times_are_utc_seconds_and_null_when_unknown() -> None:
    minus_five = timezone(timedelta(hours=-5))
    state = ContainerStateTerminated(
        exit_code=2, started_at=datetime(2024, 1, 1, 23, 0, 0, 999999, tzinfo=minus_five)
    )
    assert state.to_wire() == {
        "exitCode": 2,
        "startedAt": "2024-01-02T04:00:00Z",
        "finishedAt": None,
    }
    assert ContainerStateRunning().to_wire() == {"startedAt": None}


def test_container_status_built_in_python_encodes_like_go() -> None:
    status = ContainerStatus(
        name="c",
        state=ContainerState(waiting=ContainerStateWaiting(reason="r")),
        ready=True,
        restart_count=2,
    )
    assert encode(status) == golden("ContainerStatus.case_insensitive_keys.json")


def test_unknown_kubernetes_fields_of_a_container_status_survive() -> None:
    status = decode(golden("ContainerStatus.k8s_extras.json"), ContainerStatus)
    assert list(status.extra) == [
        "allocatedResources",
        "resources",
        "volumeMounts",
        "user",
        "stopSignal",
    ]
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.signal == 9


def test_nil_and_empty_lists_stay_distinct() -> None:
    (sparse,) = decode_list(b'[{"name":"p"}]', PodStatus)
    (empty,) = decode_list(b'[{"name":"p","containers":[]}]', PodStatus)
    assert sparse.containers is None and empty.containers == ()
    assert b'"containers":null' in encode(sparse) and b'"containers":[]' in encode(empty)


def test_status_list_null_decodes_to_empty_list() -> None:
    assert decode_list(b"null", PodStatus) == []


def test_status_answer_must_be_a_list() -> None:
    with pytest.raises(WireFormatError, match="expected list"):
        decode_list(b'{"name":"p"}', PodStatus)


def test_invalid_json_is_a_wire_format_error() -> None:
    with pytest.raises(WireFormatError, match="invalid JSON"):
        decode(b"<html>bad gateway</html>", CreateStruct)
    with pytest.raises(WireFormatError, match="invalid JSON"):
        decode(b'{"PodUID": NaN}', CreateStruct)


def test_ping_response_distinguishes_absent_taints_from_no_taints() -> None:
    assert PingResponse().to_wire() == {"status": "ok"}
    assert PingResponse(taints=()).to_wire() == {"status": "ok", "taints": []}
    full = PingResponse(
        resources=PingResources(
            cpu="100",
            memory="128Gi",
            pods="100",
            accelerators=(
                Accelerator(resource_type="nvidia.com/gpu", model="a100", available="8"),
                Accelerator(resource_type="xilinx.com/fpga", available="0"),
            ),
        ),
        taints=(Taint(key="example", value="v", effect="NoSchedule"),),
    )
    assert encode(full) == golden("PingResponse.full.json")


def test_pod_ref_never_raises_on_odd_pods() -> None:
    assert str(pod_ref({"metadata": {"namespace": "n", "name": "p", "uid": "u"}})) == "n/p (u)"
    assert pod_ref({}).name == ""
    assert pod_ref({"metadata": {"name": 3}}).name == ""


def test_retrieved_pod_data_omits_empty_job_script_but_always_writes_job_config() -> None:
    wire = RetrievedPodData(pod={}).to_wire()
    assert list(wire) == ["pod", "container", "jobConfig"]
    assert list(RetrievedPodData(pod={}, job_script="#!/bin/sh").to_wire())[-1] == "jobScript"


def test_env_values_with_shell_and_html_characters_survive_a_round_trip() -> None:
    hostile = 'q"uote $(id) `date` \\ back\nnew <b>&amp; ☃ \u2028'
    pod = {"spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": hostile}]}]}}
    data = RetrievedPodData(pod=pod)
    again = decode(encode(data), RetrievedPodData)
    assert again.pod["spec"]["containers"][0]["env"][0]["value"] == hostile
    assert b"<" not in encode(data) and b"\\u003cb\\u003e" in encode(data)


# --- ExecRequest query ------------------------------------------------------------------------


def test_exec_request_query_round_trips_repeated_command() -> None:
    request = ExecRequest("ns", "uid", "pod", "main", ("sh", "-c", "echo a && echo b"), stdin=True)
    query = request.to_query()
    assert [value for key, value in query if key == "command"] == ["sh", "-c", "echo a && echo b"]
    assert ExecRequest.from_query(query) == request


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("podUID", "u"), ("podName", "p"), ("container", "c"), ("command", "x")], "namespace"),
        ([("namespace", "n"), ("podUID", "u"), ("podName", "p"), ("container", "c")], "command"),
        (
            [("namespace", "n"), ("namespace", "m"), ("podUID", "u"), ("podName", "p"),
             ("container", "c"), ("command", "x")],
            "namespace",
        ),
        (
            [("namespace", "n"), ("podUID", "u"), ("podName", "p"), ("container", "c"),
             ("command", "x"), ("tty", "yes")],
            "tty",
        ),
    ],
)
def test_bad_exec_queries_name_the_parameter(query: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(WireFormatError) as caught:
        ExecRequest.from_query(query)
    assert caught.value.path == field


def test_exec_with_tty_merges_stderr_into_stdout() -> None:
    query = [("namespace", "n"), ("podUID", "u"), ("podName", "p"), ("container", "c"),
             ("command", "sh"), ("tty", "1"), ("stderr", "1")]
    request = ExecRequest.from_query(query)
    assert request.tty and not request.stderr


# --- gojson ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (-0.0, "-0"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (123456789.125, "123456789.125"),
    ],
)
def test_floats_are_formatted_like_go(value: float, expected: str) -> None:
    assert gojson.go_float(value) == expected
    assert gojson.dumps([value]) == f"[{expected}]".encode()


def test_gojson_escapes_exactly_like_go() -> None:
    text = "<>&\u2028\u2029\b\f\x00\x1f\x7f\t\n\r\"\\/é😀"
    assert gojson.dumps(text) == (
        b'"\\u003c\\u003e\\u0026\\u2028\\u2029\\b\\f\\u0000\\u001f\x7f\\t\\n\\r\\"\\\\/'
        + "é😀".encode()
        + b'"'
    )


def test_gojson_replaces_lone_surrogates_like_gos_decoder() -> None:
    assert gojson.dumps(json.loads('"a\\ud800b"')) == '"a\ufffdb"'.encode()


def test_gojson_rejects_nan_on_both_sides() -> None:
    with pytest.raises(ValueError):
        gojson.dumps(float("nan"))
    with pytest.raises(ValueError):
        gojson.loads(b"[Infinity]")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_fast_and_reference_encoders_agree(value: Any) -> None:
    reference = "".join(gojson._encode_slow(value))
    for raw, escaped in gojson._GO_EXTRA_ESCAPES:
        reference = reference.replace(raw, escaped)
    assert gojson.dumps(value) == reference.encode("utf-8", "vnode-gojson-fffd")


@given(json_values)
def test_gojson_output_parses_back_to_the_same_value(value: Any) -> None:
    assert gojson.loads(gojson.dumps(value)) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_formatted_floats_parse_back_to_the_same_float(value: float) -> None:
    # Go may print an integral float without a dot ("1e+16" -> "10000000000000000").
    assert float(gojson.loads(gojson.dumps(value))) == value


def test_datetimes_inside_kubernetes_dicts_are_written_like_metav1_time() -> None:
    plus_two = timezone(timedelta(hours=2))
    pod = {"metadata": {"creationTimestamp": datetime(2024, 1, 1, 12, 0, 0, 5, tzinfo=plus_two)}}
    assert gojson.dumps(pod) == b'{"metadata":{"creationTimestamp":"2024-01-01T10:00:00Z"}}'
    assert gojson.dumps([0.5, datetime(2024, 1, 1)]) == b'[0.5,"2024-01-01T00:00:00Z"]'
    with pytest.raises(TypeError, match="not JSON serializable"):
        gojson.dumps({"x": object()})

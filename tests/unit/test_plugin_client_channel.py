"""The Kubernetes channel protocol codec (sans I/O) and the Status documents the kubelet sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin_client import channel
from plugin_client.channel import ChannelProtocolError, Close, Data, TerminalSize

STATUS_GOLDEN = Path(__file__).parent / "golden" / "plugin_client" / "outputs"


@given(st.sampled_from([0, 1, 2, 3, 4]), st.binary(max_size=512))
def test_data_messages_round_trip(number: int, payload: bytes) -> None:
    message = channel.encode_data(number, payload)
    assert message[0] == number
    assert channel.decode_message(message) == Data(number, payload)


def test_v5_close_message_is_255_then_the_channel() -> None:
    assert channel.encode_close(channel.STDIN) == b"\xff\x00"
    assert channel.decode_message(b"\xff\x00") == Close(channel.STDIN)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (b"", "empty message"),
        (b"\x05hi", "unknown channel 5"),
        (b"\xff", "close message must be 2 bytes"),
        (b"\xff\x00\x00", "close message must be 2 bytes"),
        (b"\xff\x09", "close of unknown channel 9"),
    ],
)
def test_malformed_messages_are_protocol_errors(message: bytes, problem: str) -> None:
    with pytest.raises(ChannelProtocolError, match=problem):
        channel.decode_message(message)


def test_encoding_refuses_unknown_channels() -> None:
    with pytest.raises(ChannelProtocolError):
        channel.encode_data(9, b"")
    with pytest.raises(ChannelProtocolError):
        channel.encode_close(255)


@given(st.binary(max_size=64))
def test_decoding_never_fails_with_anything_but_a_protocol_error(message: bytes) -> None:
    try:
        decoded = channel.decode_message(message)
    except ChannelProtocolError:
        return
    assert isinstance(decoded, Data | Close)


def test_resize_payload_uses_kubernetes_capitalised_keys() -> None:
    assert channel.encode_resize(80, 24) == b'{"Width":80,"Height":24}'


def test_resize_payload_may_hold_several_sizes_and_any_key_case() -> None:
    payload = b'{"Width":80,"Height":24}\n{"width":100,"height":40}\n'
    assert channel.decode_resize(payload) == [TerminalSize(80, 24), TerminalSize(100, 40)]
    assert channel.decode_resize(b"") == []


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"Width":-1,"Height":1}', "out of range"),
        (b'{"Width":70000,"Height":1}', "out of range"),
        (b'{"Width":"80","Height":1}', "must be an integer"),
        (b"[80,24]", "expected a JSON object"),
        (b"{nope", "invalid JSON"),
    ],
)
def test_bad_resize_payloads_are_protocol_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(ChannelProtocolError, match=problem):
        channel.decode_resize(payload)


@pytest.mark.parametrize(
    ("status", "golden"),
    [
        (channel.status_success(), "Status.success.json"),
        (channel.status_exit_code(3), "Status.non_zero_exit.json"),
        (channel.status_failure('container "x" not found'), "Status.internal_error.json"),
    ],
)
def test_status_documents_match_go_metav1_status_bytes(status: dict[str, object], golden: str) -> None:
    assert channel.encode_status(status) == (STATUS_GOLDEN / golden).read_bytes()


def test_exit_code_zero_is_reported_as_success() -> None:
    assert channel.status_exit_code(0) == channel.status_success()


@pytest.mark.parametrize(
    ("status", "exit_code", "message"),
    [
        (channel.status_success(), 0, ""),
        (channel.status_exit_code(3), 3, "command terminated with non-zero exit code: exit status 3"),
        (channel.status_exit_code(255), 255, "command terminated with non-zero exit code: exit status 255"),
        (channel.status_failure("boom"), None, "Internal error occurred: boom"),
        (
            {"status": "Failure", "reason": "NonZeroExitCode", "message": "m",
             "details": {"causes": [{"reason": "ExitCode", "message": "abc"}]}},
            None,
            "m (no valid ExitCode cause)",
        ),
        (
            {"status": "Failure", "reason": "NonZeroExitCode", "message": "m",
             "details": {"causes": [{"reason": "ExitCode", "message": "300"}]}},
            None,
            "m (no valid ExitCode cause)",
        ),
        ({"status": "Failure"}, None, "command failed"),
    ],
)
def test_exec_result_reads_a_status_like_client_go(
    status: dict[str, object], exit_code: int | None, message: str
) -> None:
    result = channel.exec_result(status)  # type: ignore[arg-type]
    assert (result.exit_code, result.message) == (exit_code, message)


def test_decoding_a_status_requires_a_json_object() -> None:
    assert channel.decode_status(b'{"metadata":{},"status":"Success"}')["status"] == "Success"
    with pytest.raises(ChannelProtocolError):
        channel.decode_status(b"[]")
    with pytest.raises(ChannelProtocolError):
        channel.decode_status(b"command terminated")

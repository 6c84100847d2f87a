"""The Kubernetes remote-command channel protocol over WebSocket (``v5.channel.k8s.io``), sans I/O.

Each binary WebSocket message is ``[channel byte][payload]``:

| channel | direction         | payload                                                      |
|---------|-------------------|--------------------------------------------------------------|
| 0       | client -> server  | stdin bytes                                                  |
| 1, 2    | server -> client  | stdout, stderr bytes (an empty message on the lowest open    |
|         |                   | output channel announces the session, as the kubelet does)   |
| 3       | server -> client  | JSON ``metav1.Status`` once the command ends (v4 and v5)     |
| 4       | client -> server  | JSON ``{"Width": W, "Height": H}`` terminal size             |
| 255     | either            | v5 only: ``[255, channel]`` closes that channel (stdin EOF)  |

This module encodes and decodes those messages and builds and reads the Status documents, with the
exact bytes the kubelet writes (see ``tests/unit/golden/plugin_client/outputs/Status.*.json``). It has no sockets,
tasks or clocks, so both vnode's plugin exec extension and the kubelet's WebSocket endpoint use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import gojson

__all__ = [
    "CLOSE",
    "ERROR",
    "RESIZE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "V4_PROTOCOL",
    "V5_PROTOCOL",
    "ChannelProtocolError",
    "Close",
    "Data",
    "ExecResult",
    "TerminalSize",
    "decode_message",
    "decode_resize",
    "decode_status",
    "encode_close",
    "encode_data",
    "encode_resize",
    "encode_status",
    "exec_result",
    "status_exit_code",
    "status_failure",
    "status_success",
]

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE = 255

V5_PROTOCOL = "v5.channel.k8s.io"
V4_PROTOCOL = "v4.channel.k8s.io"

_CHANNELS = frozenset({STDIN, STDOUT, STDERR, ERROR, RESIZE})

# Kubernetes' TerminalSize fields are uint16.
_MAX_TERMINAL_DIMENSION = 0xFFFF


class ChannelProtocolError(ValueError):
    """A message that is not valid in the channel protocol; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes on one channel."""

    channel: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """v5 CLOSE signal: the peer will send nothing more on ``channel``."""

    channel: int


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int


def encode_data(channel: int, payload: bytes = b"") -> bytes:
    """One message carrying ``payload`` on ``channel``."""
    if channel not in _CHANNELS:
        raise ChannelProtocolError(f"unknown channel {channel}")
    return bytes((channel,)) + payload


def encode_close(channel: int) -> bytes:
    """The v5 message that closes ``channel`` (e.g. stdin EOF)."""
    if channel not in _CHANNELS:
        raise ChannelProtocolError(f"unknown channel {channel}")
    return bytes((CLOSE, channel))


def decode_message(message: bytes) -> Data | Close:
    """Decode one binary WebSocket message."""
    if not message:
        raise ChannelProtocolError("empty message: every message starts with a channel byte")
    channel = message[0]
    if channel == CLOSE:
        if len(message) != 2:
            raise ChannelProtocolError(
                f"close message must be 2 bytes [255, channel], got {len(message)}"
            )
        if message[1] not in _CHANNELS:
            raise ChannelProtocolError(f"close of unknown channel {message[1]}")
        return Close(message[1])
    if channel not in _CHANNELS:
        raise ChannelProtocolError(f"unknown channel {channel}")
    return Data(channel, bytes(message[1:]))


def encode_resize(width: int, height: int) -> bytes:
    """The payload of a resize message (without the channel byte)."""
    _check_dimension("Width", width)
    _check_dimension("Height", height)
    return gojson.dumps({"Width": width, "Height": height})


def decode_resize(payload: bytes) -> list[TerminalSize]:
    """Terminal sizes in a resize payload (kubectl may send several JSON objects in one payload)."""
    text = payload.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    sizes: list[TerminalSize] = []
    index = 0
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index >= len(text):
            return sizes
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as error:
            raise ChannelProtocolError(f"resize: invalid JSON: {error}") from None
        if not isinstance(value, dict):
            raise ChannelProtocolError("resize: expected a JSON object")
        sizes.append(
            TerminalSize(
                width=_dimension(value, "Width"),
                height=_dimension(value, "Height"),
            )
        )


def _dimension(value: dict[str, Any], key: str) -> int:
    # Go decodes case-insensitively; a missing field is 0.
    number = value.get(key)
    if number is None:
        for candidate, item in value.items():
            if candidate.lower() == key.lower():
                number = item
    if number is None:
        return 0
    if isinstance(number, bool) or not isinstance(number, int):
        raise ChannelProtocolError(f"resize: {key} must be an integer")
    _check_dimension(key, number)
    return number


def _check_dimension(name: str, value: int) -> None:
    if not 0 <= value <= _MAX_TERMINAL_DIMENSION:
        raise ChannelProtocolError(f"resize: {name} {value} out of range 0..{_MAX_TERMINAL_DIMENSION}")


# --- metav1.Status on the error channel --------------------------------------------------------


def status_success() -> dict[str, Any]:
    """The Status the kubelet sends when the command exits 0."""
    return {"metadata": {}, "status": "Success"}


def status_exit_code(exit_code: int) -> dict[str, Any]:
    """The Status the kubelet sends when the command exits non-zero (reason NonZeroExitCode)."""
    if exit_code == 0:
        return status_success()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def status_failure(message: str) -> dict[str, Any]:
    """The Status for a failure that is not an exit code (the kubelet's NewInternalError)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode_status(status: dict[str, Any]) -> bytes:
    """The payload of the error-channel message (Go JSON bytes of the Status)."""
    return gojson.dumps(status)


def decode_status(payload: bytes) -> dict[str, Any]:
    """Parse an error-channel payload into a Status dict."""
    try:
        value = gojson.loads(payload)
    except ValueError as error:
        raise ChannelProtocolError(f"error channel: invalid JSON Status: {error}") from None
    if not isinstance(value, dict):
        raise ChannelProtocolError("error channel: Status must be a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What a Status means: an exit code (0 = success), or a failure message with no exit code.

    ``status`` is the Status document as received (None when none arrived), for passing it on
    unchanged, e.g. to kubectl.
    """

    exit_code: int | None
    message: str = ""
    status: dict[str, Any] | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0


def exec_result(status: dict[str, Any]) -> ExecResult:
    """Interpret a Status as client-go does: Success -> 0, NonZeroExitCode -> its ExitCode cause."""
    if status.get("status") == "Success":
        return ExecResult(exit_code=0, status=status)
    message = status.get("message")
    text = message if isinstance(message, str) else "command failed"
    if status.get("reason") == "NonZeroExitCode":
        details = status.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        for cause in causes if isinstance(causes, list) else ():
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    code = int(str(cause.get("message")))
                except ValueError:
                    break
                # client-go parses the code as uint8; keep what the server sent if it fits.
                if 0 <= code <= 255:
                    return ExecResult(exit_code=code, message=text, status=status)
                break
        return ExecResult(exit_code=None, message=f"{text} (no valid ExitCode cause)", status=status)
    return ExecResult(exit_code=None, message=text, status=status)

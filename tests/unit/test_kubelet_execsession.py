"""Pieces of the exec session that don't need a connection: resize decoding, Status objects,
the expected stream set and the input pump."""

from __future__ import annotations

import asyncio
import json

from vnode.kubelet import status
from vnode.kubelet import streamprotocol as sp
from vnode.kubelet.backends import ExecFailed, TerminalSize
from vnode.kubelet.execsession import InputPump, ResizeDecoder
from vnode.kubelet.requests import ExecOptions
from vnode.kubelet.spdyexec import expected_streams


def test_resize_stream_is_decoded_across_arbitrary_splits() -> None:
    raw = b'{"Width":80,"Height":24}\n{"Width":120,"Height":40}\n'
    for split in range(1, len(raw)):
        decoder = ResizeDecoder()
        sizes = decoder.feed(raw[:split]) + decoder.feed(raw[split:])
        assert sizes == [TerminalSize(80, 24), TerminalSize(120, 40)]


def test_resize_garbage_is_dropped_not_fatal() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"Width":"wide"}') == []
    assert decoder.feed(b'{"Width":1,"Height":2}') == [TerminalSize(1, 2)]


def test_exit_status_objects_match_client_go_expectations() -> None:
    assert status.for_exit(0) == {"metadata": {}, "status": "Success"}
    failed = json.loads(status.encode(status.for_exit(3)))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_expected_streams_follow_the_request_and_protocol() -> None:
    plain = ExecOptions(("ls",), stdin=True, stdout=True, stderr=True, tty=False)
    assert expected_streams(plain, sp.V4) == {"error", "stdin", "stdout", "stderr"}
    tty = ExecOptions(("sh",), stdin=True, stdout=True, stderr=False, tty=True)
    assert expected_streams(tty, sp.V5) == {"error", "stdin", "stdout", "resize"}
    assert expected_streams(tty, sp.V2) == {"error", "stdin", "stdout"}  # no resize before v3


class RecordingSession:
    def __init__(self) -> None:
        self.log: list[object] = []

    async def send_stdin(self, data: bytes) -> None:
        self.log.append(data)

    async def close_stdin(self) -> None:
        self.log.append("EOF")

    async def resize(self, size: TerminalSize) -> None:
        self.log.append(size)


async def test_input_pump_keeps_order_and_delivers_eof_once() -> None:
    pump = InputPump()
    session = RecordingSession()
    task = asyncio.create_task(pump.run(session))  # type: ignore[arg-type]
    await pump.resize(TerminalSize(10, 5))
    await pump.stdin(b"a")
    await pump.stdin(b"b")
    await pump.stdin_eof()
    await pump.stdin(b"after eof")
    await pump.stdin_eof()
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert session.log == [TerminalSize(10, 5), b"a", b"b", "EOF"]


async def test_closed_pump_unblocks_a_full_queue() -> None:
    pump = InputPump()
    for _ in range(64):
        await pump.stdin(b"x")
    blocked = asyncio.create_task(pump.stdin(b"one too many"))
    await asyncio.sleep(0)
    assert not blocked.done()
    pump.close()
    await asyncio.wait_for(blocked, 1)


def test_a_backend_failure_status_is_passed_on_unchanged() -> None:
    given = {"metadata": {}, "status": "Failure", "message": "Internal error occurred: pod gone",
             "reason": "InternalError", "details": {"causes": [{"message": "pod gone"}]}, "code": 500}
    assert status.from_backend(ExecFailed("pod gone", status=given)) == given


def test_a_backend_failure_without_a_usable_status_becomes_an_internal_error() -> None:
    for given in (None, {"status": "Success"}, {"status": "Failure", "message": 3}):
        final = status.from_backend(ExecFailed("exec stream closed before the status", status=given))
        assert (final["status"], final["reason"]) == ("Failure", "InternalError")
        assert final["message"] == "exec stream closed before the status"

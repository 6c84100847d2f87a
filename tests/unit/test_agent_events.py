"""Events are queued, never block the caller, and repeats are counted on one Event."""

from __future__ import annotations

from typing import Any

from vnode.kube.errors import NotFound, Transient
from vnode.kube.events import EventRecorder, ObjectRef

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}


class RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail_next: Exception | None = None

    async def post(self, path: str, body: Any, *, background: bool = False) -> Any:
        assert background, "events are background requests"
        self._maybe_fail()
        self.calls.append(("POST", path, body))
        return body

    async def patch(self, path: str, body: Any, *, content_type: str = "",
                    background: bool = False) -> Any:
        assert background, "events are background requests"
        self._maybe_fail()
        self.calls.append(("PATCH", path, body))
        return body

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err


def recorder(client: RecordingClient, stamps: list[str] | None = None) -> EventRecorder:
    times = iter(stamps or [f"2026-01-01T00:00:{i:02d}Z" for i in range(60)])
    return EventRecorder(client, host="vn-1", clock=lambda: next(times))  # type: ignore[arg-type]


async def test_an_event_is_a_core_v1_event_about_the_pod() -> None:
    client = RecordingClient()
    rec = recorder(client)
    rec.emit(POD, "Normal", "Submitted", "Submitted to plugin as job 42")
    await rec.flush()
    ((verb, path, body),) = client.calls
    assert (verb, path) == ("POST", "/api/v1/namespaces/ns/events")
    assert body["involvedObject"] == {"kind": "Pod", "name": "p", "uid": "u-1", "apiVersion": "v1",
                                      "namespace": "ns"}
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "Submitted",
                                                               "Submitted to plugin as job 42")
    assert body["source"] == {"component": "vnode", "host": "vn-1"}
    assert body["count"] == 1 and body["firstTimestamp"] == body["lastTimestamp"]
    assert body["metadata"]["name"].startswith("p.")


async def test_repeats_patch_the_count_of_the_first_event() -> None:
    client = RecordingClient()
    rec = recorder(client)
    for _ in range(3):
        rec.emit(POD, "Warning", "SubmitFailed", "plugin unreachable")
    await rec.flush()
    verbs = [c[0] for c in client.calls]
    assert verbs == ["POST", "PATCH", "PATCH"]
    name = client.calls[0][2]["metadata"]["name"]
    assert client.calls[2][1] == f"/api/v1/namespaces/ns/events/{name}"
    assert client.calls[2][2] == {"count": 3, "lastTimestamp": "2026-01-01T00:00:02Z"}


async def test_a_different_message_is_a_different_event() -> None:
    client = RecordingClient()
    rec = recorder(client)
    rec.emit(POD, "Warning", "SubmitFailed", "a")
    rec.emit(POD, "Warning", "SubmitFailed", "b")
    rec.emit(ObjectRef("Pod", "ns", "q", "u-2"), "Warning", "SubmitFailed", "a")
    await rec.flush()
    assert [c[0] for c in client.calls] == ["POST", "POST", "POST"]


async def test_an_expired_event_is_created_again() -> None:
    client = RecordingClient()
    rec = recorder(client)
    rec.emit(POD, "Normal", "X", "m")
    await rec.flush()
    client.fail_next = NotFound("event expired")
    rec.emit(POD, "Normal", "X", "m")
    await rec.flush()
    assert [c[0] for c in client.calls] == ["POST", "POST"]


async def test_a_failing_apiserver_loses_the_event_but_not_the_caller() -> None:
    client = RecordingClient()
    rec = recorder(client)
    client.fail_next = Transient("apiserver down")
    rec.emit(POD, "Normal", "X", "m")  # never raises
    await rec.flush()
    assert client.calls == []


def test_emit_never_blocks_and_drops_beyond_the_queue_bound() -> None:
    rec = EventRecorder(RecordingClient(), host="vn", max_queue=2)  # type: ignore[arg-type]
    for i in range(5):
        rec.emit(POD, "Normal", "X", str(i))
    assert rec.dropped == 3


async def test_long_messages_are_truncated() -> None:
    client = RecordingClient()
    rec = recorder(client)
    rec.emit(POD, "Warning", "X", "y" * 5000)
    await rec.flush()
    assert len(client.calls[0][2]["message"]) == 1024

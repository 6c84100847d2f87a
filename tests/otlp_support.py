"""An OTLP/gRPC trace collector run by a test: a grpcio server implementing opentelemetry-proto's
TraceService Export that keeps every span it is sent, so a test can assert whole traces (which
services, which spans, which parent of which)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP Span.SpanKind


@dataclass
class Received:
    service: str
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    kind: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP TraceService: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(Received(str(resource.get("service.name", "")), span.name, span.trace_id, span.span_id,
                                               span.parent_span_id, span.kind, {a.key: _value(a.value) for a in span.attributes}))
        return trace_service_pb2.ExportTraceServiceResponse()

    def children(self, parent: Received) -> list[Received]:
        return [s for s in self.spans if s.trace_id == parent.trace_id and s.parent_id == parent.span_id]

    async def wait_for(self, found: Callable[[], Received | None], what: str, timeout: float = 60.0) -> Received:
        """Poll the received spans until `found()` returns one (exporters send in batches)."""
        for _ in range(int(timeout / 0.1)):
            span = found()
            if span is not None:
                return span
            await asyncio.sleep(0.1)
        names = sorted({(s.service, s.name) for s in self.spans})
        raise AssertionError(f"no span {what} within {timeout:.0f}s; received: {names}")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    """The collector on a free loopback port, and its endpoint URL for OTEL_EXPORTER_OTLP_ENDPOINT."""
    servicer = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)

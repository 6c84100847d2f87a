"""OpenTelemetry across the plugin boundary: the agent's client injects W3C trace context
(``traceparent``, ``tracestate``) into every plugin request and the server helper continues it, so one
trace shows agent → plugin → what the plugin runs (sbatch, squeue, ...).

Off by default. :func:`setup_tracing` turns it on from the standard environment variables:

| variable | effect |
|---|---|
| ``OTEL_TRACES_EXPORTER`` | ``otlp`` (OTLP/gRPC) and/or ``console``; ``none`` or unset = off, unless an endpoint below is set |
| ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` | where spans go (setting one alone turns OTLP on) |
| ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``..._TRACES_PROTOCOL`` | ``grpc`` only (the default); anything else is refused at start |
| ``OTEL_EXPORTER_OTLP_INSECURE``, ``_HEADERS``, ``_CERTIFICATE``, ``_TIMEOUT``, ``OTEL_BSP_*`` | read by the exporter and the batch processor |
| ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` | the resource (default service name: the program's) |
| ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS`` | sampler and propagators, as the SDK reads them |
| ``OTEL_SDK_DISABLED=true`` | off, whatever else is set |

Without :func:`setup_tracing` (or with it off) the OpenTelemetry API is a no-op: spans are not
recorded and nothing is injected, at the cost of a few attribute lookups per call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace

__all__ = ["TracingConfigError", "inject", "setup_tracing", "tracer_from", "tracing_requested"]

log = logging.getLogger(__name__)

INSTRUMENTATION = "plugin_client"
_EXPORTERS = frozenset({"otlp", "console", "none"})


class TracingConfigError(ValueError):
    """An OTEL_* variable asks for something vnode cannot do; the message names it."""


def _exporters(env: Mapping[str, str]) -> list[str]:
    text = env.get("OTEL_TRACES_EXPORTER")
    if text is None or not text.strip():
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _EXPORTERS]
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not supported (use otlp, console or none)")
    return [name for name in names if name != "none"]


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Whether the environment turns tracing on (raises TracingConfigError for what it cannot do)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(_exporters(env))


def setup_tracing(default_service_name: str, env: Mapping[str, str] | None = None) -> Any:
    """Install a global TracerProvider as the OTEL_* variables ask; returns it (call ``shutdown()``
    at exit to flush), or None when tracing is off."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    names = _exporters(env)
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    if "otlp" in names and protocol != "grpc":
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} not supported (vnode exports OTLP over gRPC only)")
    # The SDK is imported only when tracing is on: it is not needed otherwise.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on: %s (service %s)", ", ".join(names), provider.resource.attributes.get(SERVICE_NAME))
    return provider


def tracer_from(provider: Any, name: str = INSTRUMENTATION) -> trace.Tracer:
    """A tracer of ``provider`` (a TracerProvider), or of the global one when None."""
    return (provider or trace.get_tracer_provider()).get_tracer(name)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context (``traceparent``...) to outgoing request headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> Any:
    """The trace context of an incoming request (an empty context when it carries none)."""
    return propagate.extract(headers)

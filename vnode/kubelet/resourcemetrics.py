"""The kubelet's usage answers from a :class:`~vnode.kubelet.backends.UsageReport`. Pure; no I/O.

* ``/metrics/resource``: Prometheus text, the series metrics-server reads (its
  ``pkg/scraper/client/resource/decode.go``), each sample stamped with its measurement time so that
  rates are computed over the real interval;
* ``/stats/summary``: the ``stats/v1alpha1`` Summary JSON, CPU and memory only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vnode.kubelet.backends import Figures, UsageReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the kubelet's exposition format
_CONTAINER = ["container", "pod", "namespace"]
_POD = ["pod", "namespace"]


def _seconds(figures: Figures) -> float:
    return figures.cpu_core_nanoseconds / 1e9


def _stamp(moment: datetime) -> float:
    return moment.timestamp()


class _ReportCollector(Collector):
    """prometheus_client's view of one report (a throwaway registry per scrape)."""

    def __init__(self, report: UsageReport, scrape_error: bool) -> None:
        self.report = report
        self.scrape_error = scrape_error

    def collect(self) -> Iterator[Metric]:
        report = self.report
        node_cpu = CounterMetricFamily("node_cpu_usage_seconds", "Cumulative cpu time consumed by the node's pods in core-seconds")
        node_mem = GaugeMetricFamily("node_memory_working_set_bytes", "Current working set of the node's pods in bytes")
        if report.node is not None:
            node_cpu.add_metric([], _seconds(report.node), timestamp=_stamp(report.node.timestamp))
            node_mem.add_metric([], report.node.memory_working_set_bytes, timestamp=_stamp(report.node.timestamp))
        pod_cpu = CounterMetricFamily("pod_cpu_usage_seconds", "Cumulative cpu time consumed by the pod in core-seconds", labels=_POD)
        pod_mem = GaugeMetricFamily("pod_memory_working_set_bytes", "Current working set of the pod in bytes", labels=_POD)
        ctr_cpu = CounterMetricFamily("container_cpu_usage_seconds", "Cumulative cpu time consumed by the container in core-seconds",
                                      labels=_CONTAINER)
        ctr_mem = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set of the container in bytes", labels=_CONTAINER)
        ctr_start = GaugeMetricFamily("container_start_time_seconds", "Start time of the container since unix epoch in seconds",
                                      labels=_CONTAINER)
        for pod in report.pods:
            labels = [pod.name, pod.namespace]
            pod_cpu.add_metric(labels, _seconds(pod.figures), timestamp=_stamp(pod.figures.timestamp))
            pod_mem.add_metric(labels, pod.figures.memory_working_set_bytes, timestamp=_stamp(pod.figures.timestamp))
            for c in pod.containers:
                clabels = [c.name, pod.name, pod.namespace]
                when = _stamp(c.figures.timestamp)
                ctr_cpu.add_metric(clabels, _seconds(c.figures), timestamp=when)
                ctr_mem.add_metric(clabels, c.figures.memory_working_set_bytes, timestamp=when)
                if c.start_time is not None:
                    ctr_start.add_metric(clabels, _stamp(c.start_time), timestamp=when)
        yield from (node_cpu, node_mem, ctr_cpu, ctr_mem, ctr_start, pod_cpu, pod_mem)
        error = GaugeMetricFamily("scrape_error", "1 if there was an error while getting container metrics, 0 otherwise")
        error.add_metric([], 1.0 if self.scrape_error else 0.0)
        yield error


def resource_metrics(report: UsageReport, *, scrape_error: bool = False) -> bytes:
    """The ``/metrics/resource`` body."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report, scrape_error))
    return generate_latest(registry)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu(figures: Figures) -> dict[str, Any]:
    cpu: dict[str, Any] = {"time": _time(figures.timestamp)}
    if figures.cpu_nano_cores is not None:
        cpu["usageNanoCores"] = figures.cpu_nano_cores
    cpu["usageCoreNanoSeconds"] = figures.cpu_core_nanoseconds
    return cpu


def _memory(figures: Figures) -> dict[str, Any]:
    return {"time": _time(figures.timestamp), "workingSetBytes": figures.memory_working_set_bytes}


def summary(report: UsageReport, node_name: str) -> dict[str, Any]:
    """The ``/stats/summary`` document (``stats/v1alpha1.Summary``)."""
    node: dict[str, Any] = {"nodeName": node_name, "startTime": _time(report.node_start_time)}
    if report.node is not None:
        node["cpu"] = _cpu(report.node)
        node["memory"] = _memory(report.node)
    pods = []
    for pod in report.pods:
        entry: dict[str, Any] = {"podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}}
        if pod.start_time is not None:
            entry["startTime"] = _time(pod.start_time)
        entry["containers"] = [
            {"name": c.name, **({"startTime": _time(c.start_time)} if c.start_time else {}),
             "cpu": _cpu(c.figures), "memory": _memory(c.figures)}
            for c in pod.containers
        ]
        entry["cpu"] = _cpu(pod.figures)
        entry["memory"] = _memory(pod.figures)
        pods.append(entry)
    return {"node": node, "pods": pods}


def summary_json(report: UsageReport, node_name: str) -> bytes:
    return json.dumps(summary(report, node_name)).encode()

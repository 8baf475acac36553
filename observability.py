"""Metrics and request counts that stay right with several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and compose set it) every worker
writes its samples to files there and any worker can report the sum of all of them.
"""

from __future__ import annotations

import os
from collections import defaultdict

from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

_metrics: PrometheusMetrics | None = None


def init_metrics(app: Flask) -> None:
    """Serve ``/metrics`` and count requests by endpoint and status."""
    global _metrics
    if _metrics is None:
        factory = GunicornInternalPrometheusMetrics if multiprocess_dir() else PrometheusMetrics
        _metrics = factory.for_app_factory(group_by="endpoint", defaults_prefix="carhub")
    _metrics.init_app(app)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry() -> CollectorRegistry:
    if multiprocess_dir():
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        return collected
    return REGISTRY


def sample_totals(metric: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Sum the samples of ``metric`` by ``labels`` across every process."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for family in registry().collect():
        for sample in family.samples:
            if sample.name == metric:
                totals[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return dict(totals)

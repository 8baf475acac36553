"""Metrics and request counts that stay right with several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and compose set it) every process
writes its samples to files there and any worker reports the sum of all of them. In
one process (tests, ``flask run``) each app gets a registry of its own, so building
several apps in one process (the test suite does) counts each one's requests.
"""

from __future__ import annotations

import os
from collections import defaultdict

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, multiprocess
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

PREFIX = "carhub"

# carhub's own counters; every app registry shows them.
CACHE_LOOKUPS = Counter(f"{PREFIX}_cache_lookups", "Cache lookups by result", ["result"])
APP_COLLECTORS = (CACHE_LOOKUPS,)


def init_metrics(app: Flask) -> None:
    """Serve ``/metrics`` and count requests by endpoint and status."""
    if multiprocess_dir():
        GunicornInternalPrometheusMetrics(app, group_by="endpoint", defaults_prefix=PREFIX)
        return
    registry = CollectorRegistry(auto_describe=True)
    for collector in APP_COLLECTORS:
        registry.register(collector)
    PrometheusMetrics(app, registry=registry, group_by="endpoint", defaults_prefix=PREFIX)
    app.extensions["carhub_metrics_registry"] = registry


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry() -> CollectorRegistry:
    if multiprocess_dir():
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        return collected
    return current_app.extensions["carhub_metrics_registry"]


def sample_totals(metric: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Sum the samples of ``metric`` by ``labels`` across every process."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for family in registry().collect():
        for sample in family.samples:
            if sample.name == metric:
                totals[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return dict(totals)

"""Metrics and request counts that stay right with several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and compose set it) every process
writes its samples to files there and any worker reports the sum of all of them. In
one process (tests, ``flask run``) each app gets a registry of its own, so building
several apps in one process (the test suite does) counts each one's requests.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

PREFIX = "carhub"

# carhub's own counters; every app registry shows them.
CACHE_LOOKUPS = Counter(f"{PREFIX}_cache_lookups", "Cache lookups by result", ["result"])
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "HTTP requests by method, endpoint and status",
    ["method", "endpoint", "status"],
)
APP_COLLECTORS = (CACHE_LOOKUPS, REQUEST_SECONDS)


def init_metrics(app: Flask) -> None:
    """Serve ``/metrics`` (prometheus_flask_exporter) and time every request.

    The exporter's own request metrics ran three Flask hooks that cost a sixth of a
    cached read (bench/api.py); one histogram around the WSGI app, its label children
    kept per process, costs a fifth of that. Its ``_count`` is the request count.
    """
    app.wsgi_app = RequestTimer(app.wsgi_app)
    app.after_request(_note_endpoint)
    if multiprocess_dir():
        GunicornInternalPrometheusMetrics(app, export_defaults=False)
        return
    registry = CollectorRegistry(auto_describe=True)
    for collector in APP_COLLECTORS:
        registry.register(collector)
    PrometheusMetrics(app, registry=registry, export_defaults=False)
    app.extensions["carhub_metrics_registry"] = registry


ENDPOINT_KEY = "carhub.endpoint"


def _note_endpoint(response: Response) -> Response:
    """Tell the timer which endpoint answered (Flask forgets its request before it returns)."""
    request.environ[ENDPOINT_KEY] = request.endpoint
    return response


class RequestTimer:
    """WSGI middleware: observe each request's duration by method, endpoint and status."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.children: dict[tuple[str, str, str], Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        status = "500"

        def start_and_note(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, start_and_note)
        finally:
            endpoint = environ.get(ENDPOINT_KEY) or "none"  # none: no route matched
            key = (environ.get("REQUEST_METHOD", ""), endpoint, status)
            child = self.children.get(key) or self.children.setdefault(key, REQUEST_SECONDS.labels(*key))
            child.observe(time.perf_counter() - started)


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

"""Operations at the root: /health and /stats (/metrics comes from the exporter)."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from blueprints.common import auth_required
from messaging.health import check_broker, queue_depths
from messaging.metrics import MESSAGES
from messaging.topology import all_queue_names
from observability import sample_totals
from services import operations

blp = Blueprint("operations", __name__)


@blp.get("/health")
def health() -> ResponseReturnValue:
    """200 while the database answers; "degraded" if only the cache or broker is down."""
    checks = {
        "database": operations.check_database(),
        "cache": operations.check_cache(),
        "broker": operations.check_with(
            lambda: {**check_broker(current_app.config["RABBITMQ_URL"]), **operations.outbox_backlog()}
        ),
    }
    if checks["database"]["status"] != "ok":
        status, code = "down", 503
    elif any(check["status"] != "ok" for check in checks.values()):
        status, code = "degraded", 503
    else:
        status, code = "ok", 200
    response = jsonify({"status": status, "checks": checks})
    response.status_code = code
    if code == 503:
        response.headers["Retry-After"] = "10"
    return response


@blp.get("/stats")
@auth_required("staff")
def stats() -> ResponseReturnValue:
    """Request counts, cache hits and misses, and message counts, across all processes."""
    requests: dict[str, dict[str, int]] = {}
    for (endpoint, status), count in sample_totals(
        "carhub_http_request_duration_seconds_count", "endpoint", "status"
    ).items():
        requests.setdefault(endpoint or "unknown", {})[status] = int(count)
    cache_lookups = sample_totals("carhub_cache_lookups_total", "result")
    _show_message_counters()
    body: dict[str, Any] = {
        "requests": requests,
        "cache": {"hits": int(cache_lookups.get(("hit",), 0)), "misses": int(cache_lookups.get(("miss",), 0))},
        "events": operations.message_counts(),
        "queues": _queue_depths(),
    }
    return jsonify(body)


def _queue_depths() -> dict[str, Any]:
    url = current_app.config["RABBITMQ_URL"]
    if not url:
        return operations.embedded_queue_depths()
    try:
        return queue_depths(url, all_queue_names())
    except Exception as exc:  # noqa: BLE001 - stats report, they never fail
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _show_message_counters() -> None:
    """Put the worker's message counters on this app's registry (one-process mode; with
    PROMETHEUS_MULTIPROC_DIR every process's counters are read from the shared files)."""
    registry = current_app.extensions.get("carhub_metrics_registry")
    if registry is not None and not current_app.extensions.get("carhub_message_counters"):
        with contextlib.suppress(ValueError):  # already there
            registry.register(MESSAGES)
        current_app.extensions["carhub_message_counters"] = True

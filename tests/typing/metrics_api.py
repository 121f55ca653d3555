"""The metrics API as a user types it; checked with ``mypy --strict``, never run."""

from __future__ import annotations

from backend_kit import load_settings
from backend_kit.metrics import (
    UNMATCHED_ROUTE,
    MetricsRecorder,
    configure_metrics,
    metrics_allowed,
    render_metrics,
    reset_metrics,
    respond,
)

settings = load_settings(metrics_enabled=True, metrics_token="token")
enabled: bool = configure_metrics(settings)
body, content_type = render_metrics("application/openmetrics-text; version=1.0.0")
scraped: bytes = body
allowed: bool = metrics_allowed("Bearer token", settings)
answer = respond("Bearer token", None, settings)
status: int = answer.status_code
recorder = MetricsRecorder("billing")
recorder.request_finished("GET", UNMATCHED_ROUTE, 404, 0.001)
recorder.breaker_transition("payments", "closed", "open")
recorder.retry_budget_refused("payments")
reset_metrics()

"""Prometheus metrics for requests, cache, retries, circuit breakers, health checks and
dropped telemetry, with one set of names for every adapter.

Turned on by ``METRICS_ENABLED=true`` (needs ``pip install "backend-kit[metrics]"``);
`backend_kit.configure` then calls `configure_metrics`, and every adapter serves the
metrics at ``METRICS_PATH`` (default ``/metrics``) to a scraper presenting
``Authorization: Bearer <METRICS_TOKEN>``. Under gunicorn with
``backend_kit.gunicorn``, the workers share one directory and any scrape returns the sum
over all of them (prometheus_client's multiprocess mode, set up automatically).

Circuit breakers and retry budgets report through `MetricsRecorder.breaker_state`,
`MetricsRecorder.breaker_transition` and `MetricsRecorder.retry_budget_refused`, read from
``backend_kit._metric_hooks.recorder`` (``None`` while metrics are off).

Examples:
    >>> from backend_kit import load_settings
    >>> from backend_kit.metrics import configure_metrics, render_metrics, reset_metrics
    >>> configure_metrics(load_settings(metrics_enabled=True, service_name="billing"))
    True
    >>> b"http_server_requests_total" in render_metrics()[0]
    True
    >>> reset_metrics()
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'backend_kit.metrics needs prometheus_client: pip install "backend-kit[metrics]"'
    ) from exc

from . import _metric_hooks
from ._metrics_dir import MULTIPROC_VARIABLE, mark_worker_dead, prepare_multiprocess_dir
from .health._report import HealthHTTPResponse

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "MULTIPROC_VARIABLE",
    "UNMATCHED_ROUTE",
    "MetricsRecorder",
    "configure_metrics",
    "mark_worker_dead",
    "metrics_allowed",
    "prepare_multiprocess_dir",
    "render_metrics",
    "reset_metrics",
    "respond",
]

#: The route label of every request no route matched (404s, scans): one value for all.
UNMATCHED_ROUTE = "unmatched"
#: Any other method is counted as this (a client can send any token as a method).
OTHER_METHOD = "_OTHER"
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
# The OpenTelemetry HTTP semantic conventions' advice for http.server.request.duration.
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_HEALTH_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Raw (method, route, status) keys remembered for the fast path; a client sending many
# invented methods only falls back to the slower label lookup.
_MAX_REQUEST_KEYS = 10_000
#: Numeric value of each circuit-breaker state in ``backend_kit_circuit_breaker_state``.
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class MetricsRecorder:
    """The metric families and the calls that move them; one per process.

    Each method is cheap and never raises into its caller: a failing metrics update
    is not worth a failed request.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        # Children are cached here: labels() takes a lock and validates on each call.
        self._children: dict[tuple[Any, ...], Any] = {}
        # Per (method, route, status) as the adapter passes them: the bound ``inc`` of the
        # request counter's child and ``observe`` of the histogram's, so a request costs
        # one dict lookup besides prometheus_client's own two updates.
        self._request_updates: dict[
            tuple[str, str | None, int], tuple[Callable[[], None], Callable[[float], None]]
        ] = {}
        self._lock = threading.Lock()
        registry = prometheus_client.REGISTRY
        self.requests = Counter(
            "http_server_requests",
            "HTTP requests served, by method, route template and status code.",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Time from the adapter receiving a request to its response, in seconds.",
            ["service", "method", "route", "status"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        cache_labels = ["service", "namespace", "function"]
        self.cache_hits = Counter(
            "backend_kit_cache_hits", "Cached calls answered from the cache.", cache_labels
        )
        self.cache_misses = Counter(
            "backend_kit_cache_misses", "Cached calls that had to load.", cache_labels
        )
        self.cache_loads = Counter(
            "backend_kit_cache_loads", "Calls of the cached function itself.", cache_labels
        )
        self.cache_errors = Counter(
            "backend_kit_cache_load_errors", "Loads that raised.", cache_labels
        )
        self.cache_fallbacks = Counter(
            "backend_kit_cache_fallbacks",
            "Cached calls served by the process's memory tier while Redis was failing.",
            cache_labels,
        )
        self.cache_stale = Counter(
            "backend_kit_cache_stale_serves",
            "Results served after their ttl, within stale_ttl, while a refresh ran.",
            cache_labels,
        )
        self._cache_metrics: dict[str, Counter] = {
            "hit": self.cache_hits,
            "miss": self.cache_misses,
            "load": self.cache_loads,
            "error": self.cache_errors,
            "fallback": self.cache_fallbacks,
            "stale": self.cache_stale,
        }
        self.retry_attempts = Counter(
            "backend_kit_retry_attempts",
            "Retries scheduled after a failed attempt (the first attempt is not counted).",
            ["service", "target"],
        )
        self.retry_give_ups = Counter(
            "backend_kit_retry_give_ups",
            "Retried calls that failed for good: attempts or time ran out.",
            ["service", "target"],
        )
        self.retry_budget_refusals = Counter(
            "backend_kit_retry_budget_refusals",
            "Retries not made because the retry budget was spent.",
            ["service", "target"],
        )
        self.breaker_state_gauge = Gauge(
            "backend_kit_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["service", "breaker"],
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "backend_kit_circuit_breaker_transitions",
            "Circuit breaker state changes.",
            ["service", "breaker", "from_state", "to_state"],
        )
        self.health_up = Gauge(
            "backend_kit_health_check_up",
            "Last result of each health check: 1 pass or warn, 0 fail.",
            ["service", "check"],
            multiprocess_mode="livemostrecent",
        )
        self.health_duration = Histogram(
            "backend_kit_health_check_duration_seconds",
            "Time each health check run took, in seconds.",
            ["service", "check", "status"],
            buckets=_HEALTH_BUCKETS,
        )
        self.sentry_events_dropped = Counter(
            "backend_kit_sentry_events_dropped",
            "Events the Sentry transport dropped (queue full, rate limited, network).",
            ["service", "reason"],
        )
        self.log_lines_dropped = Counter(
            "backend_kit_log_lines_dropped",
            "Log lines that could not be written (a broken pipe, a full disk).",
            ["service"],
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, metric.labels(self.service, *labels))
        return child

    # -- requests -------------------------------------------------------------------

    def request_finished(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One request: *route* is the framework's route template, ``None`` when no
        route matched (every such request shares `UNMATCHED_ROUTE`)."""
        try:
            updates = self._request_updates.get((method, route, status))
            if updates is None:
                updates = self._new_request_updates(method, route, status)
            count, observe = updates
            count()
            observe(seconds)
        except Exception:  # noqa: S110 - never fail the request over its metrics
            pass

    def _new_request_updates(
        self, method: str, route: str | None, status: int
    ) -> tuple[Callable[[], None], Callable[[float], None]]:
        # Keyed by what the adapter passed, so the labels are worked out (method folded,
        # route defaulted, status as text) once per key, not per request. The key space
        # is bounded like the labels: routes are templates, unmatched paths are None,
        # and a client inventing methods only reaches the slower path past the cap.
        labels = (
            method if method in _KNOWN_METHODS else OTHER_METHOD,
            route or UNMATCHED_ROUTE,
            str(status),
        )
        updates = (
            self._child(self.requests, *labels).inc,
            self._child(self.request_duration, *labels).observe,
        )
        if len(self._request_updates) < _MAX_REQUEST_KEYS:
            self._request_updates[(method, route, status)] = updates
        return updates

    # -- cache ----------------------------------------------------------------------

    def cache_event(self, kind: str, namespace: str, function: str) -> None:
        """*kind*: ``hit``, ``miss``, ``load``, ``error``, ``fallback`` or ``stale``."""
        try:  # noqa: SIM105 - cheaper than suppress() on every request
            self._child(self._cache_metrics[kind], namespace, function).inc()
        except Exception:  # noqa: S110
            pass

    # -- retries and breakers -------------------------------------------------------

    def retry_attempt(self, target: str) -> None:
        """A retry of *target* (a qualified function name) was scheduled."""
        self._inc(self.retry_attempts, target)

    def retry_give_up(self, target: str) -> None:
        """*target* failed for good."""
        self._inc(self.retry_give_ups, target)

    def retry_budget_refused(self, target: str) -> None:
        """A retry budget refused a retry of *target* (for a retry-budget implementation)."""
        self._inc(self.retry_budget_refusals, target)

    def breaker_state(self, breaker: str, state: str) -> None:
        """Breaker *breaker* is now in *state*: ``closed``, ``half_open`` or ``open``."""
        try:  # noqa: SIM105 - cheaper than suppress() on every request
            self._child(self.breaker_state_gauge, breaker).set(BREAKER_STATES[state])
        except Exception:  # noqa: S110
            pass

    def breaker_transition(self, breaker: str, from_state: str, to_state: str) -> None:
        """Breaker *breaker* went from *from_state* to *to_state* (also sets the state)."""
        self._inc(self.breaker_transitions, breaker, from_state, to_state)
        self.breaker_state(breaker, to_state)

    # -- health and telemetry ---------------------------------------------------------

    def health_check(self, check: str, status: str, seconds: float) -> None:
        """A run of *check* ended with *status* (``pass``, ``warn`` or ``fail``)."""
        try:
            self._child(self.health_up, check).set(0.0 if status == "fail" else 1.0)
            self._child(self.health_duration, check, status).observe(seconds)
        except Exception:  # noqa: S110
            pass

    def sentry_dropped(self, reason: str, quantity: int) -> None:
        """The Sentry transport dropped *quantity* events for *reason*."""
        try:  # noqa: SIM105 - cheaper than suppress() on every request
            self._child(self.sentry_events_dropped, reason).inc(quantity)
        except Exception:  # noqa: S110
            pass

    def log_line_dropped(self) -> None:
        """A log line could not be written."""
        self._inc(self.log_lines_dropped)

    def _inc(self, metric: Any, *labels: str) -> None:
        try:  # noqa: SIM105 - cheaper than suppress() on every request
            self._child(metric, *labels).inc()
        except Exception:  # noqa: S110
            pass


_recorder: MetricsRecorder | None = None
_recorder_lock = threading.Lock()


def configure_metrics(settings: Settings) -> bool:
    """Start (or stop) recording metrics as *settings* say (``METRICS_ENABLED``).

    Returns whether metrics are now recorded. The metric families are created once per
    process; calling again changes only the ``service`` label of later updates. Safe to
    call twice.
    """
    global _recorder
    if not settings.metrics_enabled:
        _metric_hooks.recorder = None
        return False
    with _recorder_lock:
        if _recorder is None:
            _recorder = MetricsRecorder(settings.service_name)
        elif _recorder.service != settings.service_name:
            _recorder.service = settings.service_name
            _recorder._children.clear()
            _recorder._request_updates.clear()
        _metric_hooks.recorder = _recorder
    return True


def reset_metrics() -> None:
    """Stop recording (the values recorded so far stay in the registry)."""
    _metric_hooks.recorder = None


def _registry() -> Any:
    if os.environ.get(MULTIPROC_VARIABLE):
        from prometheus_client import ProcessCollector, multiprocess
        from prometheus_client.platform_collector import PlatformCollector

        # Built per scrape, as prometheus_client advises: it reads every worker's files.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        # The scraped worker's own process figures (the others' are not reachable).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        return registry
    return prometheus_client.REGISTRY


def render_metrics(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type: OpenMetrics when *accept* (the
    scraper's ``Accept`` header) asks for it, the Prometheus text format otherwise."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry()), content_type


def metrics_allowed(authorization: str | None, settings: Settings) -> bool:
    """Whether a caller with the ``Authorization`` header *authorization* may read the
    metrics: ``Bearer <METRICS_TOKEN>`` (constant-time compare); without a token,
    anyone in ``development`` and nobody elsewhere."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        return settings.environment == "development"
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def respond(
    authorization: str | None, accept: str | None, settings: Settings | None = None
) -> HealthHTTPResponse:
    """The HTTP answer to a scrape, as the adapters send it: 200 with the metrics, or
    401 with a ``WWW-Authenticate`` challenge and no metrics."""
    if settings is None:
        from ._active import get_settings

        settings = get_settings()
    if not metrics_allowed(authorization, settings):
        return HealthHTTPResponse(
            status_code=401,
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "WWW-Authenticate": 'Bearer realm="metrics"',
                "Cache-Control": "no-store",
            },
            body=b"metrics need Authorization: Bearer <METRICS_TOKEN>\n",
        )
    body, content_type = render_metrics(accept)
    return HealthHTTPResponse(
        status_code=200,
        headers={"Content-Type": content_type, "Cache-Control": "no-store"},
        body=body,
    )

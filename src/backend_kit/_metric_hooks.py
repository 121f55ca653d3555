"""Where the library's call sites find the metrics recorder, without importing it.

``recorder`` is ``None`` unless ``METRICS_ENABLED`` is on (`backend_kit.metrics`), so
with metrics off each call site costs one module attribute read and a ``None`` check,
and prometheus_client is never imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .metrics import MetricsRecorder

__all__ = ["recorder"]

recorder: MetricsRecorder | None = None

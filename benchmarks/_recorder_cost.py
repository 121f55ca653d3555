"""The time one request's metrics update takes, printed in µs: the best of ``--repeat``
rounds of ``--calls`` calls of ``MetricsRecorder.request_finished`` (one counter
increment and one histogram observation) for one route.

    PROMETHEUS_MULTIPROC_DIR=<empty dir> python benchmarks/_recorder_cost.py

With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client runs in its multiprocess mode
(each value write goes to a memory-mapped file under a lock, as under gunicorn);
without it, the values live in the process's memory. ``bench_metrics.py`` runs this
script once in each mode, each in a fresh process, since prometheus_client picks its
mode when it is imported.
"""

from __future__ import annotations

import argparse
import time

from backend_kit import _metric_hooks, load_settings
from backend_kit.metrics import configure_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configure_metrics(load_settings(metrics_enabled=True, service_name="bench-recorder"))
    recorder = _metric_hooks.recorder
    assert recorder is not None
    record = recorder.request_finished
    record("GET", "/hello", 200, 0.0012)  # the first call creates the children
    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        for _ in range(args.calls):
            record("GET", "/hello", 200, 0.0012)
        best = min(best, (time.perf_counter() - started) / args.calls * 1e6)
    print(f"{best:.3f}")


if __name__ == "__main__":
    main()

"""The health API as a user types it; checked with ``mypy --strict``, never run."""

from __future__ import annotations

from backend_kit import load_settings
from backend_kit.health import (
    CONTENT_TYPE,
    CheckStatus,
    HealthCheck,
    HealthRegistry,
    HealthReport,
    HealthRunner,
    Observation,
    details_allowed,
    postgres_check,
    redis_check,
)

registry = HealthRegistry([postgres_check("postgresql://app@db/app"), redis_check("redis://r")])


@registry.check(component_type="http", critical=False, timeout=0.5)
def payments() -> Observation:
    return Observation(1.0, "ms")


@registry.check
async def queue() -> tuple[int, str]:
    return (3, "messages")


def serve(authorization: str | None) -> tuple[bytes, int, str]:
    runner = HealthRunner(registry, cache_seconds=2.0)
    report: HealthReport = runner.ready()
    status: CheckStatus = report.status
    detailed: bool = details_allowed(authorization, load_settings())
    assert status in ("pass", "warn", "fail")
    return report.to_json(detailed=detailed), report.http_status, CONTENT_TYPE


check = HealthCheck("cron", run=lambda: None, component_type="custom")
same_function: Observation = payments()

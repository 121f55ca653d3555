"""The answer to a probe, in the "Health Check Response Format for HTTP APIs" draft
(``application/health+json``), and who may see its details."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ._checks import CheckResult, CheckStatus

if TYPE_CHECKING:
    from rich.table import Table

    from backend_kit._settings import Settings

__all__ = ["CONTENT_TYPE", "HealthHTTPResponse", "HealthReport", "details_allowed", "render_table"]

#: The media type of a health report.
CONTENT_TYPE = "application/health+json"


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one probe (``live``, ``ready`` or ``startup``).

    ``to_dict(detailed=False)`` is the public answer: the status and nothing else.
    ``to_dict(detailed=True)`` adds the service, release and every check, with failure
    reasons already passed through the redaction policy.

    Examples:
        >>> HealthReport(status="warn", probe="ready").http_status
        200
    """

    status: CheckStatus
    probe: str
    checks: tuple[CheckResult, ...] = ()
    service_id: str | None = None
    release_id: str | None = None
    #: Why the probe failed without running checks (``starting``, ``draining: ...``).
    output: str | None = None

    @property
    def http_status(self) -> int:
        """200 for ``pass`` and ``warn``, 503 for ``fail``."""
        return 503 if self.status == "fail" else 200

    @property
    def passed(self) -> bool:
        """True for ``pass`` and ``warn``."""
        return self.status != "fail"

    def to_dict(self, *, detailed: bool = False) -> dict[str, Any]:
        """The report as health+json data; only the status unless *detailed*."""
        data: dict[str, Any] = {"status": self.status}
        if not detailed:
            return data
        if self.service_id:
            data["serviceId"] = self.service_id
        if self.release_id:
            data["releaseId"] = self.release_id
        data["description"] = f"{self.probe} probe of {self.service_id or 'the service'}"
        if self.output:
            data["output"] = self.output
        checks: dict[str, list[dict[str, Any]]] = {}
        for result in self.checks:
            checks.setdefault(result.key, []).append(_check_dict(result))
        if checks or self.probe == "ready":
            data["checks"] = checks
        return data

    def to_json(self, *, detailed: bool = False) -> bytes:
        """`to_dict` serialised as UTF-8 JSON bytes, ready to send with `CONTENT_TYPE`."""
        return orjson.dumps(self.to_dict(detailed=detailed), default=str)


@dataclass(frozen=True)
class HealthHTTPResponse:
    """What a web framework sends back for a probe: status code, headers and body."""

    status_code: int
    headers: dict[str, str]
    body: bytes


def _check_dict(result: CheckResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "componentId": result.check.name,
        "componentType": result.check.component_type,
    }
    observation = result.observation
    if observation is not None and observation.value is not None:
        entry["observedValue"] = observation.value
        if observation.unit:
            entry["observedUnit"] = observation.unit
    entry["status"] = result.status
    entry["time"] = result.time
    if result.output:
        entry["output"] = result.output
    if not result.check.critical:
        # Not a field of the draft, which allows extra ones: says why a failure warns.
        entry["critical"] = False
    return entry


def details_allowed(authorization: str | None, settings: Settings | None = None) -> bool:
    """Whether a caller presenting the ``Authorization`` header value *authorization*
    may see the detailed report.

    With ``HEALTH_TOKEN`` set, only ``Bearer <HEALTH_TOKEN>`` unlocks it (compared in
    constant time). Without a token, details are shown only when ``ENVIRONMENT`` is
    ``development``. *settings* defaults to the active settings.

    Examples:
        >>> from backend_kit import load_settings
        >>> settings = load_settings(health_token="s3cret-token", environment="production")
        >>> details_allowed("Bearer s3cret-token", settings), details_allowed("Bearer x", settings)
        (True, False)
    """
    if settings is None:
        from backend_kit._active import get_settings

        settings = get_settings()
    token = settings.health_token.get_secret_value() if settings.health_token else ""
    if not token:
        return settings.environment == "development"
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def render_table(data: HealthReport | dict[str, Any]) -> Table:
    """A rich table of a report (or of detailed health+json data fetched from a
    service), one row per check, for a terminal."""
    from rich.markup import escape
    from rich.table import Table

    if isinstance(data, HealthReport):
        data = data.to_dict(detailed=True)
    status = str(data.get("status", "fail"))
    service = escape(str(data.get("serviceId", "service")))
    title = f"{service}: [{_STATUS_STYLE.get(status, '')}]{status}[/]"
    if data.get("releaseId"):
        title += f" (release {escape(str(data['releaseId']))})"
    table = Table(title=title, caption=escape(str(data["output"])) if data.get("output") else None)
    for column in ("check", "type", "status", "observed"):
        table.add_column(column, no_wrap=True)
    table.add_column("output", overflow="fold")
    checks = data.get("checks") or {}
    for key, entries in checks.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            observed = entry.get("observedValue")
            text = "" if observed is None else f"{observed} {entry.get('observedUnit', '')}".strip()
            check_status = str(entry.get("status", ""))
            table.add_row(
                escape(key),
                escape(str(entry.get("componentType", ""))),
                f"[{_STATUS_STYLE.get(check_status, '')}]{check_status}[/]",
                escape(text),
                escape(str(entry.get("output", ""))),
            )
    return table

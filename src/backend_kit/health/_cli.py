"""``backend-kit health live|ready|report``: probe in-process or ask a running service.

Exit status: 0 when the probe passes or warns, 1 when it fails (or the service cannot
be reached), 2 on a usage error. Good as a Docker ``HEALTHCHECK`` without curl.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import click
import orjson

from backend_kit._active import set_active_settings
from backend_kit._cli_common import (
    chosen_settings_class,
    make_current_directory_importable,
    settings_option,
    subcommand_settings_option,
)
from backend_kit._errors import ConfigError

from ._builtins import checks_from_settings
from ._checks import HealthRegistry
from ._paths import health_paths
from ._report import HealthReport, render_table
from ._runner import HealthRunner

__all__ = ["health"]


class UsageProblem(click.ClickException):
    """A usage error reported on one line (``Error: ...``), exit status 2."""

    exit_code = 2


@dataclass(frozen=True)
class _Options:
    registry: str | None
    url: str | None
    timeout: float
    as_json: bool
    allow_insecure_token: bool = False


class _ProbeFailed(Exception):
    """The probe over HTTP failed for a reason worth a line of its own (exit 1)."""


def _load_runner(spec: str | None) -> HealthRunner:
    if spec is None:
        return HealthRunner(checks_from_settings(), cache_seconds=0)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageProblem(
            f"--registry {spec!r} is not of the form module:attribute, "
            "for example myapp.health:registry"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure to import is the caller's to fix
        from backend_kit._active import get_redactor

        reason = get_redactor().redact_text(f"{type(error).__name__}: {error}")
        raise UsageProblem(
            f"--registry {spec!r}: cannot import module {module_name!r} ({reason})"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageProblem(
                f"--registry {spec!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if callable(target) and not isinstance(target, (HealthRegistry, HealthRunner)):
        target = target()
    if isinstance(target, HealthRunner):
        return target
    if isinstance(target, HealthRegistry):
        return HealthRunner(target, cache_seconds=0)
    raise UsageProblem(
        f"--registry {spec!r} is a {type(target).__name__}; expected a HealthRegistry, "
        "a HealthRunner, or a function returning one"
    )


def _probe_url(base: str, probe: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    from backend_kit._active import get_settings

    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageProblem(
            "--url must be an http:// or https:// URL, for example http://127.0.0.1:8000"
        )
    if parts.path not in ("", "/"):
        return base
    paths = health_paths(get_settings())
    path = {"live": paths.live, "ready": paths.ready, "report": paths.report}[probe]
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_headers(url: str, allow_insecure: bool) -> dict[str, str]:
    """The Authorization header for *url*, or none. Raises `UsageProblem` when a token
    would travel in clear to another machine and *allow_insecure* is not given."""
    from urllib.parse import urlsplit

    from backend_kit._active import get_settings

    token = get_settings().health_token
    if token is None or not token.get_secret_value():
        return {}
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not _is_loopback(host) and not allow_insecure:
        raise UsageProblem(
            f"HEALTH_TOKEN is not sent in clear over http:// to {host}: use an https:// "
            "URL or a loopback address, or pass --allow-insecure-token if the network "
            "between here and the service is trusted"
        )
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


def _fetch(url: str, timeout: float, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET *url* without following redirects (a bearer token must not travel on to
    wherever a redirect points); the HTTP status and the body."""
    import urllib.error
    import urllib.request

    class _NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx is returned as an error, not followed

    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(  # noqa: S310 - scheme checked by _probe_url
        url, headers={"Accept": "application/health+json, application/json", **headers}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read(1_000_000)
    except urllib.error.HTTPError as error:
        try:
            return error.code, error.read(1_000_000)
        finally:
            error.close()


_REPORT_STATUSES = ("pass", "warn", "fail")


def _health_report(http_status: int, body: bytes, sent_token: bool) -> tuple[str, dict[str, Any]]:
    """The status and report in a response; raises `_ProbeFailed` for anything that is
    not a health report, so no page that merely answers 200 can pass."""
    if http_status in (401, 403):
        if sent_token:
            raise _ProbeFailed(f"the health token was refused (HTTP {http_status})")
        raise _ProbeFailed(
            f"the service asks for a health token (HTTP {http_status}); set HEALTH_TOKEN"
        )
    if 300 <= http_status < 400:
        raise _ProbeFailed(f"HTTP {http_status}: a redirect, which is not followed")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(data, dict) or status not in _REPORT_STATUSES:
        raise _ProbeFailed(
            f"HTTP {http_status}, and the response is not a health report "
            "(JSON with a status of pass, warn or fail); is --url the service's health "
            "endpoint?"
        )
    if http_status >= 400:
        status = "fail"
    return str(status), data


def _run(probe: str, options: _Options) -> None:
    http_status: int | None = None
    if options.url is not None:
        if options.registry is not None:
            raise UsageProblem("--url and --registry cannot be used together")
        url = _probe_url(options.url, probe)
        from backend_kit._redact import mask_url

        headers = _token_headers(url, options.allow_insecure_token)
        try:
            http_status, body = _fetch(url, options.timeout, headers)
            status, data = _health_report(http_status, body, bool(headers))
        except _ProbeFailed as failure:
            click.echo(f"{probe}: fail ({mask_url(url)}: {failure})", err=True)
            sys.exit(1)
        except OSError as error:  # refused, timed out, DNS: the probe fails
            reason = getattr(error, "reason", error)
            click.echo(f"{probe}: fail (cannot reach {mask_url(url)}: {reason})", err=True)
            sys.exit(1)
    else:
        # The registry's module may configure the settings itself, so they are read
        # after it is imported, when the probe runs.
        runner = _load_runner(options.registry)
        report: HealthReport = runner.live() if probe == "live" else runner.ready()
        data, status = report.to_dict(detailed=True), report.status
    _print(probe, status, data, options.as_json, http_status)
    sys.exit(1 if status == "fail" else 0)


def _print(
    probe: str, status: str, data: dict[str, Any], as_json: bool, http_status: int | None
) -> None:
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    if probe == "report":
        from rich.console import Console

        Console(soft_wrap=False).print(render_table(data))
        return
    failed_over_http = status == "fail" and http_status is not None
    click.echo(
        f"{probe}: {status} (HTTP {http_status})" if failed_over_http else f"{probe}: {status}"
    )
    for key, entries in (data.get("checks") or {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry.get("status") != "pass":
                click.echo(f"  {key}: {entry.get('status')} {entry.get('output', '')}".rstrip())
    if data.get("output"):
        click.echo(f"  {data['output']}")


def _probe_command(probe: str, help_text: str) -> click.Command:
    @click.command(name=probe, help=help_text)
    @click.option(
        "--registry",
        metavar="MODULE:ATTRIBUTE",
        help="The HealthRegistry to run (or a function returning one); default: the "
        "checks implied by DATABASE_URL and CACHE_URL.",
    )
    @click.option(
        "--url",
        metavar="URL",
        help="Ask a running service instead, e.g. http://127.0.0.1:8000 (the probe's "
        "path is added) or a full probe URL; the answer must be a health report. "
        "HEALTH_TOKEN is sent as a bearer token, over https:// or to a loopback address "
        "only; redirects are not followed.",
    )
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        help="Seconds to wait for the service with --url.",
    )
    @click.option(
        "--allow-insecure-token",
        is_flag=True,
        help="Send HEALTH_TOKEN with --url over plain http:// to a host that is not a "
        "loopback address (refused otherwise).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the health+json report.")
    @subcommand_settings_option
    def command(
        registry: str | None,
        url: str | None,
        timeout: float,
        allow_insecure_token: bool,
        as_json: bool,
    ) -> None:
        try:
            # Active for the checks, without configuring logging or Sentry for a one-shot
            # probe.
            set_active_settings(chosen_settings_class()())
            _run(probe, _Options(registry, url, timeout, as_json, allow_insecure_token))
        except ConfigError as error:
            raise UsageProblem(str(error)) from None

    return command


@click.group(name="health")
@settings_option
def health() -> None:
    """Probe the service's health: exit 0 on pass or warn, 1 on fail, 2 on usage errors."""
    # Like `flask --app`: modules of the current directory are importable.
    make_current_directory_importable()


health.add_command(_probe_command("live", "Liveness: passes while the process can answer."))
health.add_command(
    _probe_command("ready", "Readiness: runs the checks; fails on a critical failure.")
)
health.add_command(_probe_command("report", "Readiness with every check in a table (or --json)."))

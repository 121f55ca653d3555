"""``backend-kit health live|ready|report``: probe in-process or ask a running service.

Exit status: 0 when the probe passes or warns, 1 when it fails (or the service cannot
be reached), 2 on a usage error. Good as a Docker ``HEALTHCHECK`` without curl.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click
import orjson

from backend_kit._cli_common import (
    chosen_settings_class,
    settings_option,
    subcommand_settings_option,
)
from backend_kit._errors import ConfigError
from backend_kit._settings import set_active_settings

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


def _load_runner(spec: str | None) -> HealthRunner:
    if spec is None:
        return HealthRunner(checks_from_settings(), cache_seconds=0)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageProblem(
            f"--registry {spec!r} is not of the form module:attribute, "
            "for example myapp.health:registry"
        )
    # Like `flask --app`: modules of the current directory are importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure to import is the caller's to fix
        from backend_kit._redact import get_redactor

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

    from backend_kit._settings import get_settings

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


def _fetch(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET *url*; the HTTP status and the health+json body (empty when not JSON)."""
    import urllib.error
    import urllib.request

    from backend_kit._settings import get_settings

    headers = {"Accept": "application/health+json, application/json"}
    token = get_settings().health_token
    if token is not None and token.get_secret_value():
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, body = int(response.status), response.read(1_000_000)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(1_000_000)
        error.close()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = {}
    return status, data if isinstance(data, dict) else {}


def _run(probe: str, options: _Options) -> None:
    if options.url is not None:
        if options.registry is not None:
            raise UsageProblem("--url and --registry cannot be used together")
        url = _probe_url(options.url, probe)
        from backend_kit._redact import mask_url

        try:
            http_status, data = _fetch(url, options.timeout)
        except OSError as error:  # refused, timed out, DNS: the probe fails
            reason = getattr(error, "reason", error)
            click.echo(f"{probe}: fail (cannot reach {mask_url(url)}: {reason})", err=True)
            sys.exit(1)
        status = str(data.get("status") or ("pass" if http_status < 400 else "fail"))
        if http_status >= 500:
            status = "fail"
    else:
        # The registry's module may configure the settings itself, so they are read
        # after it is imported, when the probe runs.
        runner = _load_runner(options.registry)
        report: HealthReport = runner.live() if probe == "live" else runner.ready()
        data, status = report.to_dict(detailed=True), report.status
    _print(probe, status, data, options.as_json)
    sys.exit(1 if status == "fail" else 0)


def _print(probe: str, status: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    if probe == "report":
        from rich.console import Console

        Console(soft_wrap=False).print(render_table(data))
        return
    click.echo(f"{probe}: {status}")
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
        "path is added) or a full probe URL. HEALTH_TOKEN is sent as a bearer token.",
    )
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        help="Seconds to wait for the service with --url.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the health+json report.")
    @subcommand_settings_option
    def command(registry: str | None, url: str | None, timeout: float, as_json: bool) -> None:
        try:
            # Active for the checks, without configuring logging or Sentry for a one-shot
            # probe.
            set_active_settings(chosen_settings_class()())
            _run(probe, _Options(registry, url, timeout, as_json))
        except ConfigError as error:
            raise UsageProblem(str(error)) from None

    return command


@click.group(name="health")
@settings_option
def health() -> None:
    """Probe the service's health: exit 0 on pass or warn, 1 on fail, 2 on usage errors."""


health.add_command(_probe_command("live", "Liveness: passes while the process can answer."))
health.add_command(
    _probe_command("ready", "Readiness: runs the checks; fails on a critical failure.")
)
health.add_command(_probe_command("report", "Readiness with every check in a table (or --json)."))

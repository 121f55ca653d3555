"""What every ``backend-kit`` command group shares: choosing the settings class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ._errors import ConfigError
from ._settings import Settings, import_settings_class

__all__ = ["DEFAULT_SETTINGS", "SETTINGS_VARIABLE", "settings_class", "settings_option"]

SETTINGS_VARIABLE = "BACKEND_KIT_SETTINGS"
DEFAULT_SETTINGS = "backend_kit.Settings"
USAGE_ERROR = 2

F = TypeVar("F", bound=Callable[..., Any])


def settings_option(function: F) -> F:
    """``--settings MODULE:CLASS`` (also ``BACKEND_KIT_SETTINGS``)."""
    option = click.option(
        "--settings",
        "settings_path",
        envvar=SETTINGS_VARIABLE,
        default=DEFAULT_SETTINGS,
        show_default=True,
        metavar="MODULE:CLASS",
        help=f"Settings class to use (also {SETTINGS_VARIABLE}).",
    )
    return option(function)


def settings_class(path: str) -> type[Settings]:
    """The class named by *path*; a wrong path is a one-line error and exit status 2."""
    try:
        return import_settings_class(path)
    except ConfigError as exc:
        click.echo(f"Error: {exc.problems[0].message}", err=True)
        raise SystemExit(USAGE_ERROR) from None

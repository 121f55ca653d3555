"""What every ``backend-kit`` command group shares: choosing the settings class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ._class_import import import_settings_class
from ._errors import ConfigError
from ._settings import Settings

__all__ = [
    "DEFAULT_SETTINGS",
    "SETTINGS_VARIABLE",
    "chosen_settings_class",
    "make_current_directory_importable",
    "settings_class",
    "settings_option",
    "subcommand_settings_option",
]

SETTINGS_VARIABLE = "BACKEND_KIT_SETTINGS"
DEFAULT_SETTINGS = "backend_kit.Settings"
USAGE_ERROR = 2

F = TypeVar("F", bound=Callable[..., Any])


def _remember_path(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # `--settings` may be given before the group, after it, or after the subcommand;
    # each context starts with its parent's choice, and the class is imported only when
    # the subcommand runs. A --settings typed on the command line replaces what came
    # before it; the variable and the default only fill in when nothing was chosen yet.
    if value is None:
        return
    typed = ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE
    if typed or not isinstance(ctx.obj, str):
        ctx.obj = value


def settings_option(function: F) -> F:
    """``--settings MODULE:CLASS`` on a command group, the top one included (also
    ``BACKEND_KIT_SETTINGS``)."""
    option = click.option(
        "--settings",
        envvar=SETTINGS_VARIABLE,
        default=DEFAULT_SETTINGS,
        show_default=True,
        metavar="MODULE:CLASS",
        expose_value=False,
        callback=_remember_path,
        help=f"Settings class to use (also {SETTINGS_VARIABLE}).",
    )
    return option(function)


def subcommand_settings_option(function: F) -> F:
    """The same option after the subcommand (``backend-kit config env --settings ...``),
    where users also write it; it wins over the group's."""
    option = click.option(
        "--settings",
        metavar="MODULE:CLASS",
        expose_value=False,
        callback=_remember_path,
        help=f"Settings class to use (also {SETTINGS_VARIABLE}, or before the subcommand).",
    )
    return option(function)


def chosen_settings_class() -> type[Settings]:
    """The class chosen by ``--settings`` (or ``BACKEND_KIT_SETTINGS``, or the default)."""
    path = click.get_current_context().obj
    return settings_class(path if isinstance(path, str) else DEFAULT_SETTINGS)


def settings_class(path: str) -> type[Settings]:
    """The class named by *path*; a wrong path is a one-line error and exit status 2."""
    try:
        return import_settings_class(path)
    except ConfigError as exc:
        click.echo(f"Error: {exc.problems[0].message}", err=True)
        raise SystemExit(USAGE_ERROR) from None


def make_current_directory_importable() -> None:
    """Put the current directory first on ``sys.path``, as ``flask`` and ``gunicorn``
    do, so a project's own ``myservice.settings:Settings`` (or health registry) is found
    when the command runs from the project's root. Only the ``backend-kit`` command
    calls this, for its own process; the library never changes ``sys.path``."""
    import os
    import sys

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)

"""The ``backend-kit`` command: inspect and check a service's configuration.

Exit codes: 0 when all is well, 2 when the configuration (or the command line) is wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import click

from ._cli_common import (
    USAGE_ERROR,
    chosen_settings_class,
    make_current_directory_importable,
    settings_option,
    subcommand_settings_option,
)
from ._errors import ConfigError
from ._redact import MASK, Redactor
from ._settings import Settings
from ._sources import VariableInfo, describe_variables, display_value
from .health._cli import health

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backend-kit", prog_name="backend-kit")
@settings_option
def main() -> None:
    """Production best practice for Django and Flask services."""
    # Like `flask --app`: the project's modules in the current directory are importable.
    make_current_directory_importable()


main.add_command(health)


@main.group()
@settings_option
def config() -> None:
    """Check, show and document the service's settings."""


def _pass_settings_class(function: Callable[..., None]) -> Callable[..., None]:
    """Give a ``config`` subcommand the chosen settings class as its first argument."""

    @functools.wraps(function)
    def with_class(*args: Any, **kwargs: Any) -> None:
        function(chosen_settings_class(), *args, **kwargs)

    return subcommand_settings_option(with_class)


def _load(cls: type[Settings]) -> Settings:
    try:
        return cls()
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(USAGE_ERROR) from None


def _settings_name(cls: type[Settings]) -> str:
    module = "backend_kit" if cls.__module__.startswith("backend_kit.") else cls.__module__
    return f"{module}.{cls.__qualname__}"


@config.command()
@_pass_settings_class
def check(cls: type[Settings]) -> None:
    """Exit 0 when the settings load; exit 2 and list every problem when they don't."""
    settings = _load(cls)
    variables = describe_variables(cls)
    explicit = sum(1 for v in variables if settings.source_of(*v.path) != "default")
    click.echo(
        f"OK: {_settings_name(cls)} is valid "
        f"(environment {settings.environment}; {len(variables)} variables, "
        f"{explicit} set, {len(variables) - explicit} at their defaults)."
    )


def _value_at(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part, None)
    return value


def _effective_rows(settings: Settings) -> Iterator[dict[str, Any]]:
    # The policy the logs apply: a plain field named like a secret (STRIPE_API_KEY)
    # is masked here as it would be in a log line.
    redactor = Redactor.from_settings(settings)
    for variable in describe_variables(type(settings)):
        value = display_value(_value_at(settings, variable.path))
        if variable.secret:
            pass  # SecretStr and SecretURL render masked already
        elif value and redactor.is_sensitive_key(variable.name):
            value = MASK
        else:
            value = redactor.redact_text(value)
        yield {
            "variable": variable.name,
            "value": value,
            "source": settings.source_of(*variable.path),
            "secret": variable.secret,
        }


@config.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@_pass_settings_class
def show(cls: type[Settings], output_format: str) -> None:
    """Every effective value with where it came from; secrets masked."""
    settings = _load(cls)
    rows = list(_effective_rows(settings))
    if output_format == "json":
        _echo_json({"settings": _settings_name(cls), "variables": rows})
        return
    _echo_table(
        f"Effective settings of {_settings_name(cls)}",
        ["Variable", "Value", "Source"],
        [[row["variable"], row["value"], row["source"]] for row in rows],
    )


@config.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
@_pass_settings_class
def env(cls: type[Settings], output_format: str) -> None:
    """Every variable the settings read: type, default, required, secret."""
    variables = describe_variables(cls)
    if output_format == "json":
        _echo_json(
            {"settings": _settings_name(cls), "variables": [_variable_dict(v) for v in variables]}
        )
    elif output_format == "markdown":
        click.echo(reference_markdown(variables), nl=False)
    else:
        _echo_table(
            f"Variables read by {_settings_name(cls)}",
            ["Variable", "Type", "Default", "Required", "Secret", "Description"],
            [
                [
                    v.name,
                    v.type,
                    v.default or "",
                    "yes" if v.required else "no",
                    "yes" if v.secret else "no",
                    v.description,
                ]
                for v in variables
            ],
        )


def _variable_dict(variable: VariableInfo) -> dict[str, Any]:
    return {
        "variable": variable.name,
        "type": variable.type,
        "default": variable.default,
        "required": variable.required,
        "secret": variable.secret,
        "description": variable.description,
    }


def reference_markdown(variables: list[VariableInfo]) -> str:
    """The configuration reference as a Markdown table."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| Variable | Type | Default | Required | Secret | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in variables:
        default = f"`{cell(v.default)}`" if v.default else ""
        lines.append(
            f"| `{v.name}` | {cell(v.type)} | {default} | {'yes' if v.required else 'no'} "
            f"| {'yes' if v.secret else 'no'} | {cell(v.description)} |"
        )
    return "\n".join(lines) + "\n"


@config.command()
@_pass_settings_class
def example(cls: type[Settings]) -> None:
    """A commented .env.example on standard output."""
    lines = [
        f"# Settings for {_settings_name(cls)}.",
        "# Generated by `backend-kit config example`: copy to .env and fill in.",
        "# Required variables are uncommented; the others show their default.",
        "# Secrets belong in the secrets directory or in <NAME>_FILE, not in this file.",
    ]
    for v in describe_variables(cls):
        lines.append("")
        if v.description:
            lines.append(f"# {v.description}")
        facts = [f"Type: {v.type}."]
        facts.append("Required." if v.required else "Optional.")
        if v.secret:
            facts.append("Secret.")
        lines.append("# " + " ".join(facts))
        lines.append(f"{v.name}=" if v.required else f"# {v.name}={v.default or ''}")
    click.echo("\n".join(lines))


def _echo_json(data: Any) -> None:
    import orjson

    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _echo_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        # Piped into a file or a pager: do not fold rows at 80 columns.
        console = Console(width=200)
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, overflow="fold", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()

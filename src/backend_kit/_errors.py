"""Errors raised by backend_kit, written for the person who has to fix the deployment."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = ["ConfigError", "ConfigProblem"]


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration. Never holds the offending value."""

    #: The environment variable to set, spelled as the user must spell it
    #: (prefix and ``__`` nesting included), e.g. ``MYAPP_DB__PORT``.
    variable: str
    #: What was expected, e.g. ``"Input should be a valid integer"``.
    message: str
    #: Where the bad value came from, e.g. ``"environment variable MYAPP_DB__PORT"``,
    #: ``"file .env.production"``, ``"secrets directory /run/secrets"``, ``"not set"``.
    source: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.message} (from {self.source})"


class ConfigError(Exception):
    """The settings could not be loaded. Lists every problem at once.

    ``str(error)`` is a readable report; ``error.problems`` (and ``error.errors()``)
    give the same content in structured form. Neither ever contains a value read from
    the configuration, so the error is safe to log and to send to Sentry.
    """

    def __init__(
        self, problems: Iterable[ConfigProblem], *, settings_name: str = "settings"
    ) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        self.settings_name = settings_name
        super().__init__(self._report())

    def _report(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{count} {noun} in the configuration of {self.settings_name}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)

    def errors(self) -> list[dict[str, str]]:
        """The problems as plain dictionaries (``variable``, ``message``, ``source``)."""
        return [asdict(problem) for problem in self.problems]

    def __repr__(self) -> str:
        variables = ", ".join(problem.variable for problem in self.problems)
        return f"ConfigError({len(self.problems)} problems: {variables})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.problems, self.settings_name))


def _rebuild(problems: tuple[ConfigProblem, ...], settings_name: str) -> ConfigError:
    return ConfigError(problems, settings_name=settings_name)

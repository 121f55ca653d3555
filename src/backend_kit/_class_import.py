"""Import a settings class named by a dotted path, for the CLI, gunicorn and Django."""

from __future__ import annotations

import importlib
import re

from ._errors import ConfigError, ConfigProblem
from ._redact import Redactor
from ._settings import Settings

__all__ = ["import_settings_class"]


def import_settings_class(path: str) -> type[Settings]:
    """Import the settings class named by *path* (``package.module:ClassName``).

    The module is imported from ``sys.path`` as it is: this function never changes it
    (the ``backend-kit`` command puts the current directory there, for its own process
    only). Raises `ConfigError` with one problem that says what is wrong with *path*.
    """

    def fail(message: str) -> ConfigError:
        # A user's module may fail with a message that quotes a credential.
        message = Redactor().redact_text(message)
        return ConfigError(
            [ConfigProblem("BACKEND_KIT_SETTINGS", message, "--settings or BACKEND_KIT_SETTINGS")],
            settings_name=path,
        )

    module_name, sep, attribute = path.strip().partition(":")
    if not sep:
        module_name, _, attribute = module_name.rpartition(".")
    if (
        not module_name
        or not attribute
        or not re.fullmatch(r"[\w.]+", f"{module_name}.{attribute}")
    ):
        raise fail(f"{path!r} is not of the form package.module:ClassName")
    error: ConfigError | None = None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            error = fail(
                f"no module named {module_name!r} (is it installed, or in the current directory?)"
            )
        else:
            error = fail(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")
    except Exception as exc:  # a broken user module; report it in one line
        error = fail(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")
    if error is not None:
        raise error
    candidate = getattr(module, attribute, None)
    if candidate is None:
        raise fail(f"module {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(candidate, type) and issubclass(candidate, Settings)):
        raise fail(f"{module_name}:{attribute} is not a subclass of backend_kit.Settings")
    return candidate

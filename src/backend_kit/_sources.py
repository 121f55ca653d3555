"""Where settings come from, and how each value is traced back to its source.

The chain, strongest first: keyword arguments, the environment, ``.env.{ENVIRONMENT}``,
``.env``, the secrets directory, ``<NAME>_FILE`` variables, then the field defaults.
pydantic-settings' own environment source does the parsing (prefixes, ``__`` nesting,
JSON for complex fields) for every layer, so the layers only differ in where their
variables come from.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from ._errors import ConfigProblem
from ._redact import Redactor
from ._secrets import SecretURL, field_is_secret

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "VariableInfo",
    "describe_variables",
    "display_value",
    "resolve_sources",
    "variable_name",
]

#: Names a deployment can use to point the settings at other files without code.
ENV_FILE_VARIABLE = "BACKEND_KIT_ENV_FILE"
SECRETS_DIR_VARIABLE = "BACKEND_KIT_SECRETS_DIR"

_SAFE_ENVIRONMENT = re.compile(r"^[a-z0-9_\-]{1,32}$")


@dataclass(frozen=True)
class _Layer:
    variables: dict[str, str]  # normalised name -> value
    spelled: dict[str, str]  # normalised name -> name as written
    describe: Callable[[str], str]  # name as written -> where it came from


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment parsing, over a mapping of our choosing."""

    def __init__(self, settings_cls: type[Settings], variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._variables


def _config(cls: type[Settings]) -> tuple[str, bool, str]:
    config = cls.model_config
    return (
        config.get("env_prefix") or "",
        bool(config.get("case_sensitive", False)),
        config.get("env_nested_delimiter") or "__",
    )


def _field_env_name(cls: type[BaseModel], name: str, field: FieldInfo, prefix: str) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return alias if alias else f"{prefix}{name}"


def variable_name(cls: type[Settings], path: tuple[str, ...]) -> str:
    """The environment variable for the field at *path*, spelled as a user sets it."""
    prefix, case_sensitive, delimiter = _config(cls)
    if not path:
        return "(settings)"
    field = cls.model_fields.get(path[0])
    head = _field_env_name(cls, path[0], field, prefix) if field else f"{prefix}{path[0]}"
    name = delimiter.join((head, *path[1:]))
    return name if case_sensitive else name.upper()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        model = _model_of(arg)
        if model is not None:
            return model
    return None


def _is_secret(annotation: Any) -> bool:
    return field_is_secret(annotation)


def _normalise(name: str, case_sensitive: bool) -> str:
    return name if case_sensitive else name.lower()


def _layer(
    variables: Mapping[str, str], case_sensitive: bool, describe: Callable[[str], str]
) -> _Layer:
    normalised = {_normalise(k, case_sensitive): v for k, v in variables.items() if v is not None}
    spelled = {_normalise(k, case_sensitive): k for k in variables}
    return _Layer(normalised, spelled, describe)


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}


def _matches_field(name: str, field_names: set[str], delimiter: str) -> bool:
    return name in field_names or any(name.startswith(f + delimiter) for f in field_names)


def _read_secrets_dir(
    directory: Path,
    explicit: bool,
    field_names: set[str],
    case_sensitive: bool,
    delimiter: str,
    problems: list[ConfigProblem],
) -> dict[str, str]:
    where = f"secrets directory {directory}"
    if not directory.is_dir():
        if explicit:
            problems.append(
                ConfigProblem(
                    SECRETS_DIR_VARIABLE,
                    f"the secrets directory {directory} does not exist or is not a directory",
                    where,
                )
            )
        return {}
    root = directory.resolve()
    found: dict[str, str] = {}
    for entry in sorted(directory.iterdir()):
        key = _normalise(entry.name, case_sensitive)
        if entry.name.startswith(".") or not _matches_field(key, field_names, delimiter):
            continue
        variable = entry.name if case_sensitive else entry.name.upper()
        target = entry.resolve()
        if not target.is_relative_to(root):
            problems.append(
                ConfigProblem(
                    variable,
                    f"the secrets file {entry} is a link to a path outside {directory}; it is "
                    "refused. Put the file itself in the directory (or a link inside it).",
                    where,
                )
            )
            continue
        if not target.is_file():
            continue
        try:
            found[entry.name] = target.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            problems.append(ConfigProblem(variable, f"cannot read {entry}: {reason}", where))
    return found


def _read_file_references(
    variables: Mapping[str, str],
    field_names: set[str],
    case_sensitive: bool,
    delimiter: str,
    problems: list[ConfigProblem],
) -> tuple[dict[str, str], dict[str, str]]:
    """Values named by ``<NAME>_FILE`` variables, and the file each came from."""
    found: dict[str, str] = {}
    origin: dict[str, str] = {}
    for name, path_text in variables.items():
        key = _normalise(name, case_sensitive)
        suffix = "_FILE" if case_sensitive else "_file"
        if not key.endswith(suffix) or key in field_names:
            continue
        target_name = name[: -len(suffix)]
        if not _matches_field(_normalise(target_name, case_sensitive), field_names, delimiter):
            continue
        path = Path(path_text).expanduser()
        try:
            found[target_name] = path.read_text(encoding="utf-8").rstrip("\r\n")
            origin[target_name] = f"file {path} named by {name}"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            problems.append(
                ConfigProblem(
                    target_name if case_sensitive else target_name.upper(),
                    f"{name} names {path}, which cannot be read: {reason}",
                    f"variable {name}",
                )
            )
    return found, origin


def _parse_layer(
    cls: type[Settings],
    layer: _Layer,
    problems: list[ConfigProblem],
) -> dict[str, Any]:
    source = _MappingSource(cls, layer.variables)
    data: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        try:
            value, key, is_complex = source.get_field_value(field, name)
            value = source.prepare_field_value(name, field, value, is_complex)
        except (ValueError, SettingsError):
            variable = variable_name(cls, (name,))
            spelled = layer.spelled.get(_normalise(variable, _config(cls)[1]), variable)
            problems.append(
                ConfigProblem(
                    variable,
                    "could not be parsed: expected a JSON value for this field",
                    layer.describe(spelled),
                )
            )
            continue
        if value is not None:
            data[key] = value
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaf_paths(
    cls: type[BaseModel], data: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        field = cls.model_fields.get(key)
        model = _model_of(field.annotation) if field else None
        if model is not None and isinstance(value, Mapping):
            yield from _leaf_paths(model, value, (*prefix, key))
        else:
            yield (*prefix, key)


def resolve_sources(
    cls: type[Settings],
    init_values: Mapping[str, Any],
    *,
    env_file: str | Path | None = None,
    secrets_dir: str | Path | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, ...], str], list[ConfigProblem]]:
    """Gather the raw values for *cls* from every source.

    Returns the merged values (ready for validation), the source of each field path,
    and the problems found while reading (unreadable files, links out of the secrets
    directory, unparsable JSON). Nothing here raises for bad configuration.
    """
    prefix, case_sensitive, delimiter = _config(cls)
    field_names = {
        _normalise(_field_env_name(cls, name, field, prefix), case_sensitive)
        for name, field in cls.model_fields.items()
    }
    problems: list[ConfigProblem] = []
    environ = dict(os.environ)

    base_files = _env_files(
        env_file or environ.get(ENV_FILE_VARIABLE) or cls.model_config.get("env_file")
    )
    dotenv_base: dict[str, str] = {}
    base_origin: dict[str, Path] = {}
    for base_file in base_files:
        if base_file.is_file():
            values = _read_dotenv(base_file)
            dotenv_base.update(values)
            base_origin.update(dict.fromkeys(values, base_file))

    environment = _environment_name(cls, init_values, environ, dotenv_base, case_sensitive)
    dotenv_specific: dict[str, str] = {}
    specific_origin: dict[str, Path] = {}
    if environment is not None:
        for base_file in base_files:
            specific_file = base_file.with_name(f"{base_file.name}.{environment}")
            if specific_file.is_file():
                values = _read_dotenv(specific_file)
                dotenv_specific.update(values)
                specific_origin.update(dict.fromkeys(values, specific_file))

    explicit_dir = secrets_dir or environ.get(SECRETS_DIR_VARIABLE)
    configured_dir = cls.model_config.get("secrets_dir")
    if not isinstance(configured_dir, (str, os.PathLike)):
        configured_dir = "/run/secrets"  # one directory is supported, not a list
    directory = Path(explicit_dir or configured_dir)
    secrets = _read_secrets_dir(
        directory.expanduser(), bool(explicit_dir), field_names, case_sensitive, delimiter, problems
    )

    # `<NAME>_FILE` may be set in the environment or in either dotenv file.
    references, reference_origin = _read_file_references(
        {**dotenv_base, **dotenv_specific, **environ},
        field_names,
        case_sensitive,
        delimiter,
        problems,
    )

    layers = [  # strongest first
        _layer(environ, case_sensitive, lambda name: f"environment variable {name}"),
        _layer(dotenv_specific, case_sensitive, lambda name: f"{name} in {specific_origin[name]}"),
        _layer(dotenv_base, case_sensitive, lambda name: f"{name} in {base_origin[name]}"),
        _layer(
            secrets, case_sensitive, lambda name: f"{directory / name} in the secrets directory"
        ),
        _layer(references, case_sensitive, lambda name: reference_origin[name]),
    ]

    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for layer in reversed(layers):
        data = _parse_layer(cls, layer, problems)
        merged = _deep_merge(merged, data)
        for path in _leaf_paths(cls, data):
            sources[path] = _describe_path(cls, path, layer)
    merged = _deep_merge(merged, init_values)
    for path in _leaf_paths(cls, init_values):
        sources[path] = f"keyword argument {path[0]}"
    return merged, sources, problems


def _describe_path(cls: type[Settings], path: tuple[str, ...], layer: _Layer) -> str:
    _, case_sensitive, _ = _config(cls)
    for length in range(len(path), 0, -1):
        candidate = _normalise(variable_name(cls, path[:length]), case_sensitive)
        if candidate in layer.variables:
            return layer.describe(layer.spelled[candidate])
    return layer.describe(variable_name(cls, path))


def _env_files(value: Any) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(item) for item in value]


def _environment_name(
    cls: type[Settings],
    init_values: Mapping[str, Any],
    environ: Mapping[str, str],
    dotenv_base: Mapping[str, str],
    case_sensitive: bool,
) -> str | None:
    """The ENVIRONMENT that picks ``.env.{ENVIRONMENT}``, read before the rest."""
    raw: Any = init_values.get("environment")
    if raw is None:
        variable = _normalise(variable_name(cls, ("environment",)), case_sensitive)
        for mapping in (environ, dotenv_base):
            for name, value in mapping.items():
                if _normalise(name, case_sensitive) == variable:
                    raw = value
                    break
            if raw is not None:
                break
    if raw is None:
        field = cls.model_fields.get("environment")
        raw = field.default if field is not None else None
    if not isinstance(raw, str):
        return None
    name = raw.strip().lower()
    # Only a plain word may become part of a file name.
    return name if _SAFE_ENVIRONMENT.match(name) else None


def _secret_inputs(cls: type[BaseModel], data: Mapping[str, Any]) -> Iterator[str]:
    for key, value in data.items():
        field = cls.model_fields.get(key)
        if field is None:
            continue
        if _is_secret(field.annotation):
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, str):
                yield value
            continue
        model = _model_of(field.annotation)
        if model is not None and isinstance(value, Mapping):
            yield from _secret_inputs(model, value)


_MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")


def problems_from_validation(
    cls: type[Settings],
    exc: ValidationError,
    resolved: Mapping[str, Any],
    sources: Mapping[tuple[str, ...], str],
) -> list[ConfigProblem]:
    """Turn pydantic's errors into problems that name variables and never hold values."""
    scrubber = Redactor(secret_values=_secret_inputs(cls, resolved))
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        path, detail = _split_location(cls, error["loc"])
        message = error["msg"]
        for prefix in _MESSAGE_PREFIXES:
            message = message.removeprefix(prefix)
        if error["type"] == "missing":
            message, source = "required, but not set", "no source"
        else:
            source = _lookup_source(sources, path)
        problems.append(
            ConfigProblem(
                variable_name(cls, path) + detail,
                scrubber.mask_secret_values(message),
                source,
            )
        )
    return problems


def _lookup_source(sources: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    for length in range(len(path), 0, -1):
        if path[:length] in sources:
            return sources[path[:length]]
    for known, source in sources.items():  # an error on a whole model set field by field
        if known[: len(path)] == path:
            return source
    return "the default value"


def _split_location(
    cls: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[tuple[str, ...], str]:
    """Split pydantic's error location into the field path and a key/index detail."""
    path: list[str] = []
    model: type[BaseModel] | None = cls
    for index, part in enumerate(loc):
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            path.append(part)
            model = _model_of(annotation)
            if model is None and _is_container(annotation):
                rest = loc[index + 1 : index + 2]
                return tuple(path), "".join(f"[{item}]" for item in rest)
            continue
        break
    return tuple(path), ""


def _is_container(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_container(arg) for arg in get_args(annotation))
    if origin is typing.Annotated:
        return _is_container(get_args(annotation)[0])
    return origin in (dict, list, tuple, set, frozenset)


@dataclass(frozen=True)
class VariableInfo:
    """One environment variable a settings class reads."""

    name: str
    path: tuple[str, ...]
    type: str
    default: str | None  # None when required
    required: bool
    secret: bool
    description: str


def describe_variables(cls: type[Settings]) -> list[VariableInfo]:
    """Every variable *cls* reads, nested fields expanded, in declaration order."""
    return list(_describe(cls, cls, ()))


def _describe(
    root: type[Settings], model: type[BaseModel], prefix: tuple[str, ...]
) -> Iterator[VariableInfo]:
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        nested = _model_of(field.annotation)
        if nested is not None:
            yield from _describe(root, nested, path)
            continue
        required = field.is_required()
        default: str | None = None
        if not required:
            value = field.get_default(call_default_factory=True)
            default = display_value(value)
        yield VariableInfo(
            name=variable_name(root, path),
            path=path,
            type=type_label(field.annotation),
            default=default,
            required=required,
            secret=_is_secret(field.annotation),
            description=field.description or "",
        )


def display_value(value: Any) -> str:
    """A value as shown to a person, in `config show` and the configuration reference:
    secrets masked, None (or no default) empty, booleans lower-case, lists and
    mappings comma-separated as they are written in the environment."""
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(item) for item in value)
    return str(value)  # SecretStr and SecretURL render masked


def type_label(annotation: Any) -> str:
    """A short, human name for a field's type (``int``, ``URL``, ``one of: a, b``)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return type_label(get_args(annotation)[0])
    if origin is Literal:
        return "one of: " + ", ".join(str(arg) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        labels = [type_label(arg) for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(labels)
    if origin is dict:
        return "name=value pairs"
    if origin in (list, tuple, set, frozenset):
        return "comma-separated list"
    if isinstance(annotation, type):
        if issubclass(annotation, SecretURL):
            return "URL"
        if issubclass(annotation, SecretStr):
            return "string"
        return {"str": "string", "bool": "boolean", "int": "integer", "float": "number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)

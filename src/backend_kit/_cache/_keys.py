"""Cache keys: a stable encoding of a call's arguments, and the memory backend's keys made
of the arguments themselves."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = [
    "VALUE_KEY_TYPES",
    "UnencodableArgumentError",
    "encode_arguments",
    "function_name",
    "value_key",
]

_OPTIONS = orjson.OPT_SORT_KEYS
# Short encodings are kept readable in the key; longer ones are hashed to bound key size.
_MAX_PLAIN = 64
_dumps = orjson.dumps
_loads = orjson.loads


class UnencodableArgumentError(TypeError):
    """An argument of a cached call has no stable encoding, so it cannot be part of a key."""


def encode_arguments(qualname: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The part of a cache key that identifies one call: stable across processes and
    runs, and independent of the order of keyword arguments.

    Raises `UnencodableArgumentError` when an argument is not JSON-like (str, int, float,
    bool, None, list, tuple, dict with string keys, datetime, UUID, enum, dataclass).

    Examples:
        >>> encode_arguments("f", (1, "a"), {"b": 2}) == encode_arguments("f", (1, "a"), {"b": 2})
        True
    """
    try:
        # With keywords the top level is an object, without it is an array: f(1, a=2)
        # and f([1], {"a": 2}) must not share a key.
        encoded = _dumps({"a": args, "k": kwargs} if kwargs else args, option=_OPTIONS)
    except TypeError as exc:
        raise UnencodableArgumentError(
            f"cannot build a cache key for {qualname}(): {exc}; pass JSON-like values "
            "(str, int, float, bool, None, lists, dicts with string keys, datetimes, UUIDs, "
            "enums, dataclasses), or give cached() a key= function that returns a string"
        ) from None
    if len(encoded) <= _MAX_PLAIN:
        return encoded.decode()
    return hash_encoded(encoded)


#: The argument types a memory backend keys on as they are. Between values of these exact
#: types, Python equality agrees with equality of the JSON encoding (``1.0 == 1`` and
#: ``True == 1``, but floats and bools are not among them).
VALUE_KEY_TYPES: frozenset[type] = frozenset({str, int, type(None)})
# Types whose JSON never reads back as one of those (a float does only when it is not
# finite: JSON has no infinity, so it is null).
_NEVER_PLAIN: frozenset[type] = frozenset({bool, list, tuple, dict})


def value_key(
    namespace: str, key_prefix: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The key of a call in a `MemoryCache`, made of the arguments themselves:
    ``(namespace, key_prefix, args)``, with the sorted keyword items as a fourth item
    when there are any. It is the cache's slot as it is (a string key's slot is
    ``(namespace, key)``), so a hit builds one tuple and encodes nothing.

    An argument that is not a plain str, int or None stands in the key as its JSON reads
    back (an enum member as its value, a UUID or a datetime as its string), and when it
    does not read back as a str, an int or None (a float, a bool, a list...), the result
    is None: the call takes the JSON key. So two calls get equal keys exactly when
    their JSON keys are equal, except that ints beyond 64 bits and strings with lone
    surrogates, which JSON refuses, are keys here.

    Examples:
        >>> value_key("ns", "m.f:", (1, "a"), {}), value_key("ns", "m.f:", (1,), {"b": None})
        (('ns', 'm.f:', (1, 'a')), ('ns', 'm.f:', (1,), (('b', None),)))
        >>> value_key("ns", "m.f:", (1.0,), {}) is None  # 1.0 == 1, but its JSON differs
        True
    """
    types = VALUE_KEY_TYPES
    for arg in args:
        kind = type(arg)
        if kind not in types:
            if kind in _NEVER_PLAIN or (kind is float and math.isfinite(arg)):
                return None  # the common refusals, without a call
            plain = _plain_values(args)
            if plain is None:
                return None
            args = plain
            break
    if not kwargs:
        return (namespace, key_prefix, args)
    items = sorted(kwargs.items())
    for _, arg in items:
        if type(arg) not in types:
            plain = _plain_values(tuple(arg for _, arg in items))
            if plain is None:
                return None
            items = list(zip((name for name, _ in items), plain, strict=True))
            break
    # Four items, not three: f(1) and f(x=1) stay different keys, as they are in JSON.
    return (namespace, key_prefix, args, tuple(items))


def _plain_values(values: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """*values*, each as its JSON reads back; None when one does not read back as a
    str, an int or None, or cannot be encoded."""
    plain: list[Any] = []
    for value in values:
        kind = type(value)
        if kind not in VALUE_KEY_TYPES:
            if kind in _NEVER_PLAIN or (kind is float and math.isfinite(value)):
                return None  # known without encoding it
            try:
                value = _loads(_dumps(value, option=_OPTIONS))
            except TypeError:
                return None
            if type(value) not in VALUE_KEY_TYPES:
                return None
        plain.append(value)
    return tuple(plain)


def hash_encoded(encoded: bytes) -> str:
    """A fixed-size stand-in for a long encoding ("#" never starts a JSON text)."""
    return "#" + hashlib.blake2b(encoded, digest_size=20).hexdigest()


def function_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of *function*: the part of the key naming what is cached."""
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"

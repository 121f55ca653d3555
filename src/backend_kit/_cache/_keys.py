"""Cache keys: a stable encoding of a call's arguments."""

from __future__ import annotations

import hashlib
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
#: types (not subclasses such as enums or bool), Python equality and equality of the
#: JSON encoding agree, so a call is a hit in memory exactly when it would be on Redis.
#: Floats (``1.0 == 1``), bools (``True == 1``), tuples (``(1,)`` encodes like ``[1]``)
#: and everything else take the JSON key.
VALUE_KEY_TYPES: frozenset[type] = frozenset({str, int, type(None)})


def value_key(
    namespace: str, key_prefix: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The key of a call in a `MemoryCache`, made of the arguments themselves (nothing
    is encoded): ``(namespace, key_prefix, args)``, with the sorted keyword items as a
    fourth item when there are any. It is the cache's slot as it is (a string key's
    slot is ``(namespace, key)``), so a hit builds one tuple. None when an argument is
    not of `VALUE_KEY_TYPES`: the call takes the JSON key.

    Examples:
        >>> value_key("ns", "m.f:", (1, "a"), {}), value_key("ns", "m.f:", (1,), {"b": None})
        (('ns', 'm.f:', (1, 'a')), ('ns', 'm.f:', (1,), (('b', None),)))
        >>> value_key("ns", "m.f:", (1.0,), {}) is None
        True
    """
    types = VALUE_KEY_TYPES
    for arg in args:
        if type(arg) not in types:
            return None
    if not kwargs:
        return (namespace, key_prefix, args)
    for arg in kwargs.values():
        if type(arg) not in types:
            return None
    # Four items, not three: f(1) and f(x=1) stay different keys, as they are in JSON.
    return (namespace, key_prefix, args, tuple(sorted(kwargs.items())))


def hash_encoded(encoded: bytes) -> str:
    """A fixed-size stand-in for a long encoding ("#" never starts a JSON text)."""
    return "#" + hashlib.blake2b(encoded, digest_size=20).hexdigest()


def function_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of *function*: the part of the key naming what is cached."""
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"

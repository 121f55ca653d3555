"""Cache keys: a stable encoding of a call's arguments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["UnencodableArgumentError", "encode_arguments", "function_name"]

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


def hash_encoded(encoded: bytes) -> str:
    """A fixed-size stand-in for a long encoding ("#" never starts a JSON text)."""
    return "#" + hashlib.blake2b(encoded, digest_size=20).hexdigest()


def function_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of *function*: the part of the key naming what is cached."""
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"

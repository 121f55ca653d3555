"""How values are written to a shared cache: JSON, or pickle signed with HMAC."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Iterable
from typing import Any, Literal

import orjson

__all__ = ["JSON_TAG", "SignatureMismatch", "ValueCodec"]

#: The first byte of a JSON value; the rest is the JSON text.
JSON_TAG = b"j"
_JSON = JSON_TAG
_PICKLE = b"p"
_DIGEST = hashlib.sha256
_DIGEST_SIZE = _DIGEST().digest_size


class SignatureMismatch(Exception):
    """A stored value was not signed with this service's key: it is never unpickled."""


class ValueCodec:
    """Turns values into bytes for Redis and back.

    With *serializer* ``"json"`` (orjson, the default) values are JSON whether or not a
    signing key is set: only JSON types round-trip (a tuple comes back as a list).
    With ``"pickle"``, which needs a *signing_key*, every value is pickled and prefixed
    with an HMAC-SHA256 over the cache key and the pickle; reading accepts nothing else:
    a value whose HMAC matches neither *signing_key* nor one of *fallback_keys*, an
    unsigned (JSON) value, or bytes of an unknown format raise `SignatureMismatch`
    instead of being unpickled.
    """

    def __init__(
        self,
        serializer: Literal["json", "pickle"] = "json",
        signing_key: str | None = None,
        fallback_keys: Iterable[str] = (),
        variable_prefix: str = "",
    ) -> None:
        # Messages name the variables as the user sets them (SHOP_CACHE_SERIALIZER).
        self._serializer_variable = f"{variable_prefix}CACHE_SERIALIZER"
        self._key_variable = f"{variable_prefix}CACHE_SIGNING_KEY"
        if serializer not in ("json", "pickle"):
            raise ValueError(f"serializer must be 'json' or 'pickle', not {serializer!r}")
        if serializer == "pickle" and not signing_key:
            raise ValueError(
                f"the pickle serializer needs a signing key ({self._key_variable}), so "
                "that values read back from the cache are authenticated before unpickling"
            )
        self.serializer = serializer
        self._key = signing_key.encode() if signing_key else None
        self._fallback_keys = tuple(key.encode() for key in fallback_keys if key)

    def dumps(self, key: str, value: Any) -> bytes:
        """Raises `TypeError` naming the type when JSON cannot represent *value*."""
        if self.serializer == "json":
            try:
                return _JSON + orjson.dumps(value)
            except TypeError as exc:
                raise TypeError(
                    f"cannot store the value for cache key {key!r} as JSON ({exc}); return "
                    f"JSON types from the cached function, or set {self._serializer_variable}"
                    f"=pickle together with {self._key_variable}"
                ) from None
        assert self._key is not None
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return _PICKLE + self._sign(self._key, key, data) + data

    def loads(self, key: str, raw: bytes) -> Any:
        """Raises `SignatureMismatch` for a value this codec must not accept."""
        return self.loads_checked(key, raw)[0]

    def loads_checked(self, key: str, raw: bytes) -> tuple[Any, bool]:
        """The value in *raw*, and whether it was signed with a fallback key (so it
        should be written again with the current one). Raises `SignatureMismatch` for a
        value this codec must not accept."""
        tag, body = raw[:1], raw[1:]
        if self.serializer == "json":
            if tag == _JSON:
                return orjson.loads(body), False
            if tag == _PICKLE:
                raise SignatureMismatch(f"a pickled value, but {self._serializer_variable} is json")
            raise SignatureMismatch("an unknown value format")
        if tag == _JSON:
            # Anyone who can write to Redis can write JSON: in pickle mode only a
            # signature says the value came from this service.
            raise SignatureMismatch(f"an unsigned value, but {self._serializer_variable} is pickle")
        if tag != _PICKLE:
            raise SignatureMismatch("an unknown value format")
        assert self._key is not None
        signature, data = body[:_DIGEST_SIZE], body[_DIGEST_SIZE:]
        if hmac.compare_digest(signature, self._sign(self._key, key, data)):
            return pickle.loads(data), False  # noqa: S301 - authenticated by the HMAC
        for fallback in self._fallback_keys:
            if hmac.compare_digest(signature, self._sign(fallback, key, data)):
                return pickle.loads(data), True  # noqa: S301 - authenticated by the HMAC
        raise SignatureMismatch("the HMAC signature matches no signing key")

    @staticmethod
    def _sign(secret: bytes, key: str, data: bytes) -> bytes:
        mac = hmac.new(secret, key.encode(), _DIGEST)
        mac.update(b"\0")
        mac.update(data)
        return mac.digest()

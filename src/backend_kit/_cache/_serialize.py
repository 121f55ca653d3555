"""How values are written to a shared cache: JSON, or pickle signed with HMAC."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any, Literal

import orjson

__all__ = ["SignatureMismatch", "ValueCodec"]

_JSON = b"j"
_PICKLE = b"p"
_DIGEST = hashlib.sha256
_DIGEST_SIZE = _DIGEST().digest_size


class SignatureMismatch(Exception):
    """A stored value was not signed with this service's key: it is never unpickled."""


class ValueCodec:
    """Turns values into bytes for Redis and back.

    JSON (orjson) by default: only JSON types round-trip (a tuple comes back as a list).
    Pickle only with a signing key: the bytes are prefixed with an HMAC-SHA256 over the
    cache key and the pickle, and a value whose HMAC does not match raises
    `SignatureMismatch` instead of being unpickled.
    """

    def __init__(
        self, serializer: Literal["json", "pickle"] = "json", signing_key: str | None = None
    ) -> None:
        if serializer not in ("json", "pickle"):
            raise ValueError(f"serializer must be 'json' or 'pickle', not {serializer!r}")
        if serializer == "pickle" and not signing_key:
            raise ValueError(
                "the pickle serializer needs a signing key (CACHE_SIGNING_KEY), so that "
                "values read back from the cache are authenticated before unpickling"
            )
        self.serializer = serializer
        self._key = signing_key.encode() if signing_key else None

    def dumps(self, key: str, value: Any) -> bytes:
        """Raises `TypeError` naming the type when JSON cannot represent *value*."""
        if self._key is None:
            try:
                return _JSON + orjson.dumps(value)
            except TypeError as exc:
                raise TypeError(
                    f"cannot store the value for cache key {key!r} as JSON ({exc}); return "
                    "JSON types from the cached function, or set CACHE_SERIALIZER=pickle "
                    "together with CACHE_SIGNING_KEY"
                ) from None
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return _PICKLE + self._sign(key, data) + data

    def loads(self, key: str, raw: bytes) -> Any:
        """Raises `SignatureMismatch` for a pickle that this codec did not sign."""
        tag, body = raw[:1], raw[1:]
        if tag == _JSON:
            return orjson.loads(body)
        if tag == _PICKLE:
            if self._key is None:
                raise SignatureMismatch("a pickled value, but no signing key is configured")
            signature, data = body[:_DIGEST_SIZE], body[_DIGEST_SIZE:]
            if not hmac.compare_digest(signature, self._sign(key, data)):
                raise SignatureMismatch("the HMAC signature does not match")
            return pickle.loads(data)  # noqa: S301 - authenticated by the HMAC above
        raise SignatureMismatch("an unknown value format")

    def _sign(self, key: str, data: bytes) -> bytes:
        assert self._key is not None
        mac = hmac.new(self._key, key.encode(), _DIGEST)
        mac.update(b"\0")
        mac.update(data)
        return mac.digest()

"""One redaction policy for log events, Sentry events, health output and errors.

Everything that leaves the process as text goes through a `Redactor`: values under
sensitive keys are replaced, credentials in URLs and sensitive query parameters are
masked, ``Bearer``/``Basic`` credentials are masked, and the exact values of the
active settings' secret fields are masked wherever they appear.
"""

from __future__ import annotations

import datetime
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "DEFAULT_SENSITIVE_KEYS",
    "MASK",
    "Redactor",
    "get_redactor",
    "mask_url",
    "reset_redactor",
]

MASK = "***"

#: Substrings that make a key (or header, or query parameter) sensitive, compared
#: case-insensitively after folding ``-`` to ``_``: ``X-Session-Token`` and
#: ``db_password`` both match.
DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "csrf",
    "private_key",
    "credential",
    "dsn",
)

# Secrets shorter than this are not hunted for inside free text: masking every
# occurrence of "ab" would destroy the log without protecting anything real.
_MIN_SECRET_LENGTH = 4

# Bounds of the per-redactor memo of redacted strings.
_MAX_CACHED_TEXT = 256
_MAX_CACHED_TEXTS = 4096

_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/?#@\s]*)(?::(?P<password>[^/?#@\s]*))?@"
)
# One name=value pair of a query string (no nested or overlapping quantifiers: linear).
_URL_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&])(?P<name>[^=&#\s]+)=[^&#\s]*")
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# A Cookie header carries many name=value pairs, all of them secret: mask to end of line.
_COOKIE_HEADER = re.compile(r"(?P<name>\b(?:set-)?cookie\s*:\s*)[^\r\n]+", re.IGNORECASE)
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)


# Values written as they are: nothing to hide in a number, a date or a UUID.
_PLAIN_TYPES = (bool, int, float, datetime.date, datetime.time, uuid.UUID)


def _fold(key: str) -> str:
    return key.lower().replace("-", "_")


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, user, password = match.group("scheme", "user", "password")
    if password:
        return f"{scheme}{user}:{MASK}@"
    if user:
        # A bare user part is usually a key (Sentry DSN, token-in-URL), not a name.
        return f"{scheme}{MASK}@"
    return match.group(0)


def mask_url(url: str) -> str:
    """Return *url* with the password (or a bare key in the user part) masked, and the
    values of query parameters with a sensitive name (``sentinel_password=...``).

    Examples:
        >>> mask_url("postgres://app:s3cret@db:5432/app")
        'postgres://app:***@db:5432/app'
    """
    masked = _URL_USERINFO.sub(_mask_userinfo, url)
    if "?" in masked:
        masked = _URL_QUERY_PARAMETER.sub(_mask_query_parameter, masked)
    return masked


def _mask_query_parameter(match: re.Match[str]) -> str:
    name = _fold(match.group("name"))
    if any(key in name for key in DEFAULT_SENSITIVE_KEYS):
        return f"{match.group('lead')}{match.group('name')}={MASK}"
    return match.group(0)


class Redactor:
    """Masks secrets in nested data and free text.

    A redactor is immutable once built; build a new one to change the policy.
    """

    __slots__ = (
        "_assignment",
        "_extra_patterns",
        "_key_cache",
        "_key_mention",
        "_keys",
        "_secret_values",
        "_text_cache",
    )

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        secret_values: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        self._keys = tuple(sorted({_fold(k) for k in keys if k}))
        # Longest first, so a secret that contains another is masked whole.
        self._secret_values = tuple(
            sorted(
                {v for v in secret_values if len(v) >= _MIN_SECRET_LENGTH},
                key=len,
                reverse=True,
            )
        )
        self._extra_patterns = tuple(re.compile(p) if isinstance(p, str) else p for p in patterns)
        words = "|".join(re.escape(k).replace("_", "[_-]?") for k in self._keys)
        # ``password=hunter2``, ``"token": "abc"``, ``?api_key=...``, ``&session=...``
        self._assignment = (
            re.compile(
                # ``name=value``, ``"name": "value"``, and a repr'd pair ``('name', 'value')``
                rf"""(?P<name>[\w\-]*(?:{words})[\w\-]*)"""
                rf"""(?P<sep>["']?\s*[=:]\s*|["']\s*,\s*(?=["']))"""
                rf"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&"'#]+)""",
                re.IGNORECASE,
            )
            if self._keys
            else None
        )
        # One C-level search instead of a Python loop: this runs for most log strings.
        self._key_mention = re.compile(rf"{words}|api.?key", re.IGNORECASE) if self._keys else None
        self._key_cache: dict[str, bool] = {}
        # Log events repeat the same short strings (event names, paths, hosts): a bounded
        # memo turns their redaction into one dict lookup on the logging hot path.
        self._text_cache: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """Build the policy described by *settings*: default keys plus ``REDACT_KEYS``,
        ``REDACT_PATTERNS``, and the values of every secret field."""
        from ._settings import secret_values

        return cls(
            keys=(*DEFAULT_SENSITIVE_KEYS, *settings.redact_keys),
            secret_values=secret_values(settings),
            patterns=settings.redact_patterns,
        )

    def is_sensitive_key(self, key: str) -> bool:
        """True when values stored under *key* must never be shown."""
        cached = self._key_cache.get(key)
        if cached is None:
            folded = _fold(key)
            cached = any(k in folded for k in self._keys)
            if len(self._key_cache) < 4096:
                self._key_cache[key] = cached
        return cached

    def redact_text(self, text: str) -> str:
        """Mask every secret that can be recognised inside *text*.

        Examples:
            >>> Redactor().redact_text("GET /export?token=abc123&page=2")
            'GET /export?token=***&page=2'
        """
        cache = self._text_cache
        cached = cache.get(text)
        if cached is not None:
            return cached
        redacted = self._redact_text(text)
        if len(text) <= _MAX_CACHED_TEXT:
            if len(cache) >= _MAX_CACHED_TEXTS:
                cache.clear()  # cheaper than LRU bookkeeping, and the memo refills fast
            cache[text] = redacted
        return redacted

    def _redact_text(self, text: str) -> str:
        if self._secret_values:
            text = self.mask_secret_values(text)
        if "://" in text and "@" in text:
            text = _URL_USERINFO.sub(_mask_userinfo, text)
        if "ookie" in text or "OOKIE" in text:
            text = _COOKIE_HEADER.sub(r"\g<name>" + MASK, text)
        # Schemes first: ``Authorization: Bearer abc`` must lose ``abc``, not just ``Bearer``.
        if " " in text and ("earer" in text or "asic" in text or "EARER" in text or "ASIC" in text):
            text = _AUTH_SCHEME.sub(r"\g<scheme> " + MASK, text)
        if (
            self._assignment is not None
            and ("=" in text or ":" in text or "," in text)
            and self._key_mention is not None
            and self._key_mention.search(text) is not None
        ):
            text = self._assignment.sub(self._mask_assignment, text)
        if "PRIVATE KEY-----" in text:
            text = _PEM_PRIVATE_KEY.sub(MASK, text)
        for pattern in self._extra_patterns:
            text = pattern.sub(MASK, text)
        return text

    def redact(self, value: Any) -> Any:
        """Return a redacted copy of *value*: mappings, lists, tuples and sets are walked
        recursively, strings are searched for secrets, other objects are returned as is.

        Examples:
            >>> Redactor().redact({"user": "ann", "auth": {"password": "hunter2"}})
            {'user': 'ann', 'auth': {'password': '***'}}
        """
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return self.redact_mapping(value)
        if isinstance(value, (list, tuple)):
            if (
                len(value) == 2
                and isinstance(value[0], str)
                and value[1] is not None
                and self.is_sensitive_key(value[0])
            ):
                # A (name, value) pair, as in WSGI header lists.
                return (value[0], MASK) if isinstance(value, tuple) else [value[0], MASK]
            redacted = [self.redact(item) for item in value]
            return tuple(redacted) if isinstance(value, tuple) else redacted
        if isinstance(value, (set, frozenset)):
            return [self.redact(item) for item in value]
        return value

    def redact_mapping(self, value: Mapping[Any, Any]) -> dict[Any, Any]:
        """A redacted copy of *value* as a plain ``dict`` (see `redact`)."""
        redacted: dict[Any, Any] = {}
        redact = self.redact
        is_sensitive = self.is_sensitive_key
        for key, item in value.items():
            if item is not None and isinstance(key, str) and is_sensitive(key):
                redacted[key] = MASK
            elif item is None or isinstance(item, (bool, int, float)):
                redacted[key] = item  # nothing to hide; the common case in log events
            else:
                redacted[key] = redact(item)
        return redacted

    def redact_for_output(
        self, value: Mapping[Any, Any], *, into: dict[Any, Any] | None = None
    ) -> dict[Any, Any]:
        """Like `redact` for a mapping, but objects of other types are turned into their
        redacted ``str()``: what gets written must not depend on a ``__repr__`` being safe.
        Numbers, booleans, ``None``, dates, times and UUIDs are kept as they are.
        With *into*, the redacted items are added to that dict, which is returned.
        """
        redacted: dict[Any, Any] = {} if into is None else into
        key_cache = self._key_cache
        redact_text = self.redact_text
        # The hot path of every log call: plain lookups, no helper calls for common types.
        for key, item in value.items():
            if item is None:
                redacted[key] = None
                continue
            if isinstance(key, str):
                sensitive = key_cache.get(key)
                if sensitive is None:
                    sensitive = self.is_sensitive_key(key)
                if sensitive:
                    redacted[key] = MASK
                    continue
            if type(item) is str:
                redacted[key] = redact_text(item)
            elif isinstance(item, _PLAIN_TYPES):
                redacted[key] = item
            else:
                redacted[key] = self._output_value(item)
        return redacted

    def _output_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if value is None or isinstance(value, _PLAIN_TYPES):
            return value
        if isinstance(value, Mapping):
            return self.redact_for_output(value)
        if isinstance(value, (list, tuple)):
            if (
                len(value) == 2
                and isinstance(value[0], str)
                and value[1] is not None
                and self.is_sensitive_key(value[0])
            ):
                return [value[0], MASK]
            return [self._output_value(item) for item in value]
        if isinstance(value, (set, frozenset)):
            return [self._output_value(item) for item in value]
        try:
            text = str(value)
        except Exception:
            text = f"<{type(value).__qualname__} object (str() failed)>"
        return self.redact_text(text)

    def mask_secret_values(self, text: str) -> str:
        """Mask only the exact secret values inside *text*."""
        for value in self._secret_values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def _mask_assignment(self, match: re.Match[str]) -> str:
        value = match.group("value")
        if value.lower() in ("bearer", "basic") and match.string.startswith(
            " " + MASK, match.end()
        ):
            return match.group(0)  # its credential was masked already by the scheme rule
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group('name')}{match.group('sep')}{quote}{MASK}{quote}"


_lock = threading.Lock()
_cached: tuple[object, Redactor] | None = None


def get_redactor() -> Redactor:
    """The redactor for the active settings (see `backend_kit.get_settings`)."""
    global _cached
    from ._settings import get_settings

    settings = get_settings()
    cached = _cached
    if cached is not None and cached[0] is settings:
        return cached[1]
    with _lock:
        redactor = Redactor.from_settings(settings)
        _cached = (settings, redactor)
        return redactor


def reset_redactor() -> None:
    """Forget the cached redactor; the next `get_redactor` builds one from the settings."""
    global _cached
    with _lock:
        _cached = None

"""What is secret in a settings object, and how a URL's credential is masked.

The bottom of the settings stack: it imports nothing else of backend_kit, so the
settings model, its sources and the redaction policy can all build on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.types import _SecretBase

__all__ = [
    "DEFAULT_SENSITIVE_KEYS",
    "MASK",
    "SecretURL",
    "field_is_secret",
    "fold_key",
    "mask_url",
    "secret_values",
    "url_credential",
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

# A query parameter of a URL; its value is masked when its name is sensitive.
_URL_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&])(?P<name>[^=&#?\s]+)=[^&#\s]*")


def fold_key(key: str) -> str:
    """*key* as sensitive names are compared: lower case, ``-`` read as ``_``."""
    return key.lower().replace("-", "_")


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


def masked_userinfo(userinfo: str) -> str:
    """*userinfo* with its secret part masked."""
    # The user name (before the first ":") stays readable; a bare user part is usually
    # a key (Sentry DSN, token-in-URL), not a name, and is masked.
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """Where *url*'s userinfo starts (after the scheme) and ends (its last ``@``)."""
    at = url.rfind("@")
    if at == -1:
        return None
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme is not None else 0
    return (start, at) if at >= start else None


def mask_url(url: str) -> str:
    """Return *url* with its credentials masked: everything up to the last ``@`` is
    userinfo, of which only the user name before the first ``:`` is kept (a bare user
    part, like a Sentry DSN's key, is masked too). A password may hold any character.
    The values of query parameters with a sensitive name (``sentinel_password=...``)
    are masked too.

    Examples:
        >>> mask_url("postgres://app:s3cret@db:5432/app")
        'postgres://app:***@db:5432/app'
        >>> mask_url("postgres://app:p@ss/w#rd@db/app")
        'postgres://app:***@db/app'
    """
    span = _userinfo_span(url)
    masked = url
    if span is not None:
        start, at = span
        masked = f"{url[:start]}{masked_userinfo(url[start:at])}{url[at:]}"
    if "?" in masked:
        masked = _URL_QUERY_PARAMETER.sub(_mask_query_parameter, masked)
    return masked


def _mask_query_parameter(match: re.Match[str]) -> str:
    name = fold_key(match.group("name"))
    if any(key in name for key in DEFAULT_SENSITIVE_KEYS):
        return f"{match.group('lead')}{match.group('name')}={MASK}"
    return match.group(0)


def url_credential(url: str) -> str | None:
    """The secret part of *url*'s userinfo (everything up to the last ``@``): the
    password, or a bare user part such as a Sentry DSN's key; None without one.

    Examples:
        >>> url_credential("postgres://app:p@ss/word@db/app")
        'p@ss/word'
    """
    span = _userinfo_span(url)
    if span is None or span[0] == span[1]:
        return None
    user, colon, password = url[slice(*span)].partition(":")
    return (password if colon else user) or None


class SecretURL(SecretStr):
    """A URL whose credentials are secret.

    Shown with its password masked (``postgres://app:***@db:5432/app``); a bare key in
    the user part, as in a Sentry DSN, is masked too. ``get_secret_value()`` returns
    the full URL.
    """

    def _display(self) -> str:
        return mask_url(self.get_secret_value())

    @property
    def scheme(self) -> str:
        """The URL scheme, lower-cased (``postgresql``, ``redis``, ``memory``)."""
        match = _URL_SCHEME.match(self.get_secret_value())
        return match.group(1).lower() if match is not None else ""


def field_is_secret(annotation: Any) -> bool:
    """True when *annotation* is, or contains, a pydantic secret type."""
    if isinstance(annotation, type):
        return issubclass(annotation, _SecretBase)
    args = getattr(annotation, "__args__", ())
    return any(field_is_secret(arg) for arg in args)


def secret_paths(
    model: BaseModel, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], _SecretBase[Any]]]:
    """Each secret field of *model* (nested models and tuples included), with its path."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, _SecretBase):
            yield (*prefix, name), value
        elif isinstance(value, tuple):
            # A list of secrets (CACHE_SIGNING_KEY_FALLBACKS): each is masked like one.
            for index, item in enumerate(value):
                if isinstance(item, _SecretBase):
                    yield (*prefix, name, str(index)), item
        elif isinstance(value, BaseModel):
            yield from secret_paths(value, (*prefix, name))


def secret_values(settings: BaseModel) -> list[str]:
    """The plain values of every secret field of *settings*, for exact-value masking.

    For a URL, its password (or bare key) is included on its own as well, so the
    credential is masked even where it appears without the rest of the URL.
    """
    values: list[str] = []
    for _, secret in secret_paths(settings):
        raw = secret.get_secret_value()
        if not isinstance(raw, str) or not raw:
            continue
        if isinstance(secret, SecretURL):
            credential = url_credential(raw)
            if credential:
                values.append(raw)
                values.append(credential)
        else:
            values.append(raw)
    return values

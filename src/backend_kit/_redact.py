"""One redaction policy for log events, Sentry events, health output and errors.

Everything that leaves the process as text goes through a `Redactor`: values under
sensitive keys are replaced, credentials in URLs and sensitive query parameters are
masked, ``Bearer``/``Basic`` credentials are masked, payment card numbers keep only
their last four digits, and the exact values of the active settings' secret fields are
masked wherever they appear.

Every pattern runs in time linear in its input, whatever the input: the built-in ones
are written so that no two quantifiers can compete for the same characters, and the
user's ``REDACT_PATTERNS`` run on RE2, an engine that cannot backtrack. Text longer
than ``REDACT_MAX_LENGTH`` is cut, with a marker, before it is scanned.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._secrets import (
    DEFAULT_SENSITIVE_KEYS,
    MASK,
    fold_key,
    mask_url,
    masked_userinfo,
    secret_values,
    url_credential,
)

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_SENSITIVE_KEYS",
    "MASK",
    "Redactor",
    "UnsafePatternError",
    "compile_linear_pattern",
    "mask_card_numbers",
    "mask_url",
    "url_credential",
]

#: Longest text scanned, in characters; longer text is cut first (``REDACT_MAX_LENGTH``).
DEFAULT_MAX_LENGTH = 65536

# Secrets shorter than this are not hunted for inside free text: masking every
# occurrence of "ab" would destroy the log without protecting anything real.
_MIN_SECRET_LENGTH = 4

# Bounds of the per-redactor memo of redacted strings.
_MAX_CACHED_TEXT = 256
_MAX_CACHED_TEXTS = 4096

# URL credentials. The scheme is not matched (a run of scheme characters before every
# "://" would be rescanned from each of its positions); one scheme character before
# "://" is enough. After "://", when the authority looks like it holds credentials
# (an "@" or a ":" before the first "/", "?" or "#"), everything up to the LAST "@"
# of the whitespace-free run is userinfo, so passwords holding "@", "/", "#" or "?"
# are masked whole. Every branch consumes what it scanned, so no character is scanned
# twice: a run without "@" is consumed to its end, an authority without credentials
# is consumed up to its end.
_URL_CREDENTIALS = re.compile(
    r"://(?<=[A-Za-z0-9+.\-]://)"
    r"(?:(?=[^/?#\s]*[@:])(?:(?P<userinfo>(?:[^\s@]*@)+)|[^\s@]*)|[^/?#\s]*)"
)
# Matched on the lower-cased text: case-sensitive literals let the engine skip ahead fast.
# The credential must not be the name of an assignment ("Bearer token=abc"), which the
# assignment rule masks whole.
_AUTH_SCHEME = re.compile(
    r"\b(?:bearer|basic)(?P<credential>\s+[a-z0-9\-._~+/]+=*)(?![=:\w\-.~+/])"
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lowered(text: str) -> str:
    """*text* lower-cased, character for character (the patterns' spans must fit *text*)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # "İ" is the one character that lower-cases to two; fold it to "i" first.
    lowered = text.replace("\u0130", "i").lower()
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


# One name=value pair of a query string. The name stops at the next "?" or "&", so each
# character is looked at from one start only: linear.


# A Cookie header carries many name=value pairs, all of them secret: mask to end of line.
_COOKIE_HEADER = re.compile(r"(?P<name>\b(?:set-)?cookie\s*:\s*)[^\r\n]+", re.IGNORECASE)
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
# A payment card number: 13 to 19 digits, written without separators or in groups of 3
# to 6 digits separated by single spaces or dashes (4-4-4-4, 4-6-5, 4-4-4-4-3), standing
# on its own (not inside a word or a longer number: request ids and hashes are left
# alone) and not starting with 0, as no card number does. Every attempt is bounded (at
# most 5 groups), so the scan is linear. The Luhn check is made on
# a match.
_CARD_NUMBER = re.compile(r"[1-9](?<!\w[1-9])(?:\d{12,18}|\d{3}(?:[ \-]\d{3,6}){2,4})(?!\w)")
_CARD_SEPARATORS = str.maketrans("", "", " -")
# Each digit, doubled, with the digits of the result added up (the Luhn step).
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")
_DIGITS_TO_MASK = str.maketrans("0123456789", "**********")


def _luhn_valid(digits: str) -> bool:
    # Sums of ASCII codes, minus 48 per digit: C-level loops instead of Python ones.
    total = sum(digits[-1::-2].encode()) + sum(digits[-2::-2].translate(_LUHN_DOUBLED).encode())
    return (total - 48 * len(digits)) % 10 == 0


def _masked_card_digits(number: str) -> str:
    """*number* (Luhn-valid) with every digit but the last four masked."""
    digits = number.translate(_CARD_SEPARATORS)
    if len(digits) == len(number):
        cut = len(number) - 4
    else:
        cut = len(number)
        kept = 0
        while kept < 4:
            cut -= 1
            if number[cut] != " " and number[cut] != "-":
                kept += 1
    return number[:cut].translate(_DIGITS_TO_MASK) + number[cut:]


def _mask_card(match: re.Match[str]) -> str:
    number = match.group()
    digits = number.translate(_CARD_SEPARATORS)
    if 13 <= len(digits) <= 19 and _luhn_valid(digits):
        return _masked_card_digits(number)
    # A number right after a grouped card ("4111 1111 1111 1111 200 EUR") joins it as a
    # last group: try the card without it.
    cut = max(number.rfind(" "), number.rfind("-"))
    if cut > 0:
        digits = number[:cut].translate(_CARD_SEPARATORS)
        if 13 <= len(digits) <= 19 and _luhn_valid(digits):
            return _masked_card_digits(number[:cut]) + number[cut:]
    return number


def mask_card_numbers(text: str) -> str:
    """Return *text* with every Luhn-valid payment card number (13 to 19 digits, with or
    without spaces or dashes) masked down to its last four digits.

    Examples:
        >>> mask_card_numbers("paid with 4111 1111 1111 1111")
        'paid with **** **** **** 1111'
    """
    return _CARD_NUMBER.sub(_mask_card, text)


# Values written as they are: nothing to hide in a number, a date or a UUID.
_PLAIN_TYPES = (bool, int, float, datetime.date, datetime.time, uuid.UUID)


def _has_uuid_layout(text: str) -> bool:
    """True for letters and digits in a UUID's 8-4-4-4-12 layout, with no other dash.

    No built-in rule can match such text: the others need spaces, ``=``, ``:`` or
    ``://``, and the card rule finds at most the three 4-digit middle groups (12 digits)
    standing alone, one short of the shortest card."""
    return (
        len(text) == 36
        and text[8] == text[13] == text[18] == text[23] == "-"
        and text.count("-") == 4
        and text.replace("-", "").isalnum()
    )


def _mask_url_credentials(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    if userinfo is None:
        return match.group(0)
    return f"://{masked_userinfo(userinfo[:-1])}@"


class UnsafePatternError(ValueError):
    """A redaction pattern that cannot be run in linear time (or at all)."""


def compile_linear_pattern(pattern: str | re.Pattern[str]) -> Any:
    """Compile *pattern* with RE2, which matches in time linear in its input.

    Returns the compiled RE2 pattern. Raises `UnsafePatternError`, naming the pattern,
    when RE2 cannot run it: backreferences and lookaround need backtracking.
    """
    import re2

    if isinstance(pattern, re.Pattern):
        flags = "".join(
            letter
            for flag, letter in ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))
            if pattern.flags & flag
        )
        source = f"(?{flags}){pattern.pattern}" if flags else pattern.pattern
    else:
        source = pattern
    try:
        re.compile(source)
    except re.error as exc:
        raise UnsafePatternError(
            f"{source!r} is not a valid regular expression ({exc.msg})"
        ) from None
    options = re2.Options()
    options.log_errors = False  # the error is ours to report, once, not RE2's on stderr
    try:
        return re2.compile(source, options)
    except Exception as exc:
        raise UnsafePatternError(
            f"the pattern {source!r} cannot be run in linear time ({exc}); "
            "backreferences and lookahead/lookbehind need backtracking: rewrite it without them"
        ) from None


class Redactor:
    """Masks secrets in nested data and free text.

    A redactor is immutable once built; build a new one to change the policy.
    Raises `UnsafePatternError` for a pattern in *patterns* that cannot run in linear
    time, and `ValueError` for a *max_length* under 1.
    """

    __slots__ = (
        "_alnum_is_plain",
        "_assignment",
        "_extra_patterns",
        "_key_cache",
        "_keys",
        "_mask_cards",
        "_max_length",
        "_mention",
        "_secret_values",
        "_text_cache",
    )

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        secret_values: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
        max_length: int = DEFAULT_MAX_LENGTH,
        mask_card_numbers: bool = True,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1 character, got {max_length!r}")
        self._max_length = max_length
        self._mask_cards = mask_card_numbers
        self._keys = tuple(sorted({fold_key(k) for k in keys if k}))
        # Longest first, so a secret that contains another is masked whole.
        self._secret_values = tuple(
            sorted(
                {v for v in secret_values if len(v) >= _MIN_SECRET_LENGTH},
                key=len,
                reverse=True,
            )
        )
        self._extra_patterns = tuple(compile_linear_pattern(p) for p in patterns)
        # Without patterns of the user's, the built-in rules need punctuation or spaces
        # to match inside text made of letters and digits alone (see `redact_text`).
        self._alnum_is_plain = not self._extra_patterns
        words = "|".join(re.escape(k).replace("_", "[_\\-]?") for k in self._keys)
        # ``password=hunter2``, ``"token": "abc"``, ``token: abc``, ``?api_key=...``.
        # A match starts at a key word (literals let the engine skip ahead fast) and
        # takes the rest of the name inside a lookahead, consumed through the
        # backreference: an atomic group, so it never backtracks. A separator and a
        # value are optional, so a key word that is only mentioned, as in
        # ``('token', 'user')`` or ``missing fields: token``, still consumes its name:
        # no later key word in the same name rescans it, and no character is scanned
        # twice. It runs on the lower-cased text, where case-sensitive literals are
        # several times faster; the IGNORECASE twin serves text whose length lower()
        # changes.
        assignment = (
            rf"""(?:{words})(?=(?P<tail>[\w\-]*))(?P=tail)"""
            rf"""(?:["']?[ \t]*[=:][ \t]*"""
            r"""(?P<value>"[^"\\]*(?:\\.[^"\\]*)*"?|'[^'\\]*(?:\\.[^'\\]*)*'?|[^\s,;&"'#]+))?"""
        )
        self._assignment = re.compile(assignment) if self._keys else None
        # Whether a key word occurs at all: one C-level search of the lower-cased text.
        self._mention = re.compile(words)
        self._key_cache: dict[str, bool] = {}
        # Log events repeat the same short strings (event names, paths, hosts): a bounded
        # memo turns their redaction into one dict lookup on the logging hot path.
        self._text_cache: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """Build the policy described by *settings*: default keys plus ``REDACT_KEYS``,
        ``REDACT_PATTERNS``, ``REDACT_MAX_LENGTH``, ``REDACT_CARD_NUMBERS`` and the values
        of every secret field."""
        return cls(
            keys=(*DEFAULT_SENSITIVE_KEYS, *settings.redact_keys),
            secret_values=secret_values(settings),
            patterns=settings.redact_patterns,
            max_length=settings.redact_max_length,
            mask_card_numbers=settings.redact_card_numbers,
        )

    @property
    def max_length(self) -> int:
        """Longest text scanned; longer text is cut to this length, with a marker."""
        return self._max_length

    def is_sensitive_key(self, key: str) -> bool:
        """True when values stored under *key* must never be shown."""
        cached = self._key_cache.get(key)
        if cached is None:
            folded = fold_key(key)
            cached = any(k in folded for k in self._keys)
            if len(self._key_cache) < 4096:
                self._key_cache[key] = cached
        return cached

    def redact_text(self, text: str) -> str:
        """Mask every secret that can be recognised inside *text*. Text longer than
        `max_length` is cut to that length first, and ends with a marker saying how many
        characters were left out.

        Examples:
            >>> Redactor().redact_text("GET /export?token=abc123&page=2")
            'GET /export?token=***&page=2'
        """
        cache = self._text_cache
        cached = cache.get(text)
        if cached is not None:
            return cached
        if text.isalnum() and self._alnum_is_plain and len(text) <= self._max_length:
            # Letters and digits only (ids, hashes, words): no rule but the secret values
            # and a card number that is the whole text can match. Not memoised: such text is
            # mostly unique (request and trace ids) and would only evict the rest.
            if (13 <= len(text) <= 19 and text.isdecimal()) or (
                self._secret_values and self.mask_secret_values(text) is not text
            ):
                # A card number, or a secret whose mask may leave one standing alone.
                return self._redact_text(text)
            return text
        if self._alnum_is_plain and _has_uuid_layout(text) and len(text) <= self._max_length:
            # A UUID (task, order and user ids): plain, as above, and not memoised either.
            if self._secret_values and self.mask_secret_values(text) is not text:
                return self._redact_text(text)
            return text
        if len(text) > self._max_length:
            cut = len(text) - self._max_length
            return self._redact_text(text[: self._max_length]) + f"…[{cut} characters cut]"
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
            text = _URL_CREDENTIALS.sub(_mask_url_credentials, text)
        if "ookie" in text or "OOKIE" in text:
            text = _COOKIE_HEADER.sub(r"\g<name>" + MASK, text)
        # Schemes first: ``Authorization: Bearer abc`` must lose ``abc``, not ``Bearer``.
        if " " in text and ("earer" in text or "asic" in text or "EARER" in text or "ASIC" in text):
            text = self._mask_auth_schemes(text, _lowered(text))
        if ("=" in text or ":" in text) and self._assignment is not None:
            lowered = _lowered(text)
            if self._mention.search(lowered) is not None:
                text = self._mask_assignments(self._assignment, text, lowered)
        if "PRIVATE KEY-----" in text:
            text = _PEM_PRIVATE_KEY.sub(MASK, text)
        if self._mask_cards and len(text) >= 13 and _CARD_NUMBER.search(text) is not None:
            text = _CARD_NUMBER.sub(_mask_card, text)
        for pattern in self._extra_patterns:
            # RE2's sub() walks matches in Python; a C-level search rules most text out.
            if pattern.search(text) is not None:
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
        text_cache = self._text_cache
        redact_text = self.redact_text
        # Letters and digits alone (request and trace ids) pass as they are, as in
        # `redact_text`, when no secret value or pattern of the user's could match them.
        alnum_is_plain = self._alnum_is_plain and not self._secret_values
        max_length = self._max_length
        # The hot path of every log call: plain lookups, no helper calls for common types
        # (the memo of redacted text is read here, before calling `redact_text`).
        for key, item in value.items():
            if item is None:
                redacted[key] = None
                continue
            if type(key) is str or isinstance(key, str):
                sensitive = key_cache.get(key)
                if sensitive is None:
                    sensitive = self.is_sensitive_key(key)
                if sensitive:
                    redacted[key] = MASK
                    continue
            if type(item) is str:
                known = text_cache.get(item)
                if known is not None:
                    redacted[key] = known
                elif (
                    alnum_is_plain
                    and item.isalnum()
                    and len(item) <= max_length
                    and not (13 <= len(item) <= 19 and item.isdecimal())
                ):
                    redacted[key] = item
                else:
                    redacted[key] = redact_text(item)
            elif type(item) is int or type(item) is float or isinstance(item, _PLAIN_TYPES):
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

    @staticmethod
    def _mask_auth_schemes(text: str, lowered: str) -> str:
        matches = _AUTH_SCHEME.finditer(lowered)
        pieces: list[str] = []
        last = 0
        for match in matches:
            start = match.start("credential")
            pieces += (text[last:start], " ", MASK)
            last = match.end()
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    @staticmethod
    def _mask_assignments(assignment: re.Pattern[str], text: str, lowered: str) -> str:
        matches = assignment.finditer(lowered)
        pieces: list[str] = []
        last = 0
        for match in matches:
            start, end = match.span(2)  # the value
            if start == -1:
                continue  # a mention, not an assignment
            value = text[start:end]
            first = value[0]
            if first == '"' or first == "'":
                masked = f"{first}{MASK}{first}"
            elif end - start in (5, 6) and value.lower() in ("bearer", "basic"):
                if text.startswith(" " + MASK, end):
                    continue  # its credential was masked already by the scheme rule
                masked = MASK
            else:
                masked = MASK
            pieces += (text[last:start], masked)
            last = end
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)
